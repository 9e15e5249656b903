//! Long listings page: `queue list` fetches everything a page at a time on one connection
//! (so a listing larger than a frame still works), and `--limit`/`--after` give one page.

mod common;

use common::{ok, within, TestDaemon};
use warren_protocol::FieldValue;

#[tokio::test]
async fn queue_list_pages_through_more_queues_than_a_page() {
    let d = TestDaemon::start();
    let c = d.client().await;
    // More than two pages of 1,000, declared without waiting for each answer.
    let names: Vec<String> = (0..2_500).map(|i| format!("q-{i:05}")).collect();
    let declares = names.iter().map(|n| c.declare_queue(n, Default::default()));
    within("2,500 declares", futures::future::try_join_all(declares))
        .await
        .expect("declares");

    let all: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&d.cli(&["queue", "list", "--json"]))).expect("JSON");
    let listed: Vec<&str> = all.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names, "every queue once, in name order");

    let page: Vec<serde_json::Value> = serde_json::from_str(&ok(&d.cli(&[
        "queue", "list", "--json", "--limit", "3", "--after", "q-00100",
    ])))
    .expect("JSON");
    let listed: Vec<&str> = page.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["q-00101", "q-00102", "q-00103"]);

    let text = ok(&d.cli(&["exchange", "list", "--limit", "2"]));
    assert_eq!(
        text.lines().count(),
        3,
        "a header and two exchanges: {text}"
    );
}

/// The keys of a listing's entries, as `--json` prints them.
fn listed(d: &TestDaemon, args: &[&str], field: &str) -> Vec<String> {
    let all: Vec<serde_json::Value> = serde_json::from_str(&ok(&d.cli(args))).expect("JSON");
    all.iter().map(|v| v[field].to_string()).collect()
}

#[tokio::test]
async fn binding_list_pages_through_more_bindings_than_one_frame_holds() {
    // A 1 MiB frame: 20,000 bindings (about 2 MB of JSON) do not fit in one reply.
    let d = TestDaemon::start_with(&["--max-frame-size", "1048576"]);
    let c = d.client().await;
    c.declare_queue("jobs", Default::default())
        .await
        .expect("declare");
    let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i:05}")).collect();
    for chunk in keys.chunks(2_000) {
        let binds = chunk
            .iter()
            .map(|k| c.bind("jobs", "amq.direct", k, Default::default()));
        within("2,000 binds", futures::future::try_join_all(binds))
            .await
            .expect("binds");
    }
    // What a listing in one reply did: it cannot be answered.
    let whole = c
        .admin(
            "binding.list",
            [("queue".to_owned(), FieldValue::String("jobs".into()))]
                .into_iter()
                .collect(),
        )
        .await;
    assert!(whole.is_err(), "20,000 bindings in one 1 MiB frame");

    let c = d.client().await;
    let all = listed(
        &d,
        &["binding", "list", "--json", "--queue", "jobs"],
        "routing_key",
    );
    let expected: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    assert_eq!(all, expected, "every binding once, in key order");

    // A page after a (source, destination, type, key) prefix: an entry is after the cursor
    // when its key, cut to the cursor's length, sorts after it.
    let page = listed(
        &d,
        &[
            "binding",
            "list",
            "--json",
            "--limit",
            "2",
            "--after",
            r#"["amq.direct","jobs","queue","key-00100"]"#,
        ],
        "routing_key",
    );
    assert_eq!(page, ["\"key-00101\"", "\"key-00102\""].map(str::to_owned));
    // A source alone skips all of that source.
    let page = listed(
        &d,
        &[
            "binding",
            "list",
            "--json",
            "--limit",
            "2",
            "--after",
            r#"["amq.direct"]"#,
        ],
        "routing_key",
    );
    assert!(page.is_empty(), "no source after amq.direct: {page:?}");
    drop(c);
}

#[tokio::test]
async fn the_other_listings_page_with_limit_and_after() {
    let d = TestDaemon::start();
    let admin = d.client().await;
    for i in 0..5 {
        let name = format!("u{i}");
        ok(&d.cli_with_stdin(&["user", "add", &name, "--password-stdin"], Some("pw\n")));
        let vhost = format!("v{i}");
        ok(&d.cli(&["vhost", "add", &vhost]));
        ok(&d.cli(&["permission", "set", &name, "--vhost", &vhost]));
    }
    // Users: guest, u0..u4, in name order, over pages of 2.
    let users = listed(&d, &["user", "list", "--json"], "name");
    assert_eq!(
        users,
        ["guest", "u0", "u1", "u2", "u3", "u4"].map(|s| format!("\"{s}\""))
    );
    let page = listed(
        &d,
        &["user", "list", "--json", "--limit", "2", "--after", "u1"],
        "name",
    );
    assert_eq!(page, ["\"u2\"", "\"u3\""].map(str::to_owned));
    let page = listed(&d, &["vhost", "list", "--json", "--limit", "3"], "name");
    assert_eq!(page, ["\"/\"", "\"v0\"", "\"v1\""].map(str::to_owned));
    let page = listed(&d, &["vhost", "list", "--json", "--after", "v3"], "name");
    assert_eq!(page, ["\"v4\""].map(str::to_owned));
    // Permissions by (user, vhost): guest on /, then u0 on v0, ...
    let page = listed(
        &d,
        &[
            "permission",
            "list",
            "--json",
            "--limit",
            "2",
            "--after",
            r#"["u0","v0"]"#,
        ],
        "user",
    );
    assert_eq!(page, ["\"u1\"", "\"u2\""].map(str::to_owned));
    let page = listed(
        &d,
        &[
            "permission",
            "list",
            "--json",
            "--limit",
            "1",
            "--after",
            "guest",
        ],
        "user",
    );
    assert_eq!(page, ["\"u0\""].map(str::to_owned));

    // Consumers by (queue, tag, connection); connections by id.
    let mut clients = Vec::new();
    for i in 0..4 {
        let c = d.client().await;
        let queue = format!("q{}", 3 - i);
        c.declare_queue(&queue, Default::default())
            .await
            .expect("declare");
        let consumer = c
            .consume(&queue, Default::default())
            .await
            .expect("consume");
        clients.push((c, consumer));
    }
    let queues = listed(&d, &["consumer", "list", "--json"], "queue");
    assert_eq!(queues, ["q0", "q1", "q2", "q3"].map(|s| format!("\"{s}\"")));
    let page = listed(
        &d,
        &[
            "consumer",
            "list",
            "--json",
            "--limit",
            "2",
            "--after",
            r#"["q0"]"#,
        ],
        "queue",
    );
    assert_eq!(page, ["\"q1\"", "\"q2\""].map(str::to_owned));

    let ids: Vec<u64> = listed(&d, &["connection", "list", "--json"], "id")
        .iter()
        .map(|s| s.parse().expect("an id"))
        .collect();
    assert!(ids.len() >= 5, "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id: {ids:?}");
    let after = ids[1].to_string();
    let page = listed(
        &d,
        &[
            "connection",
            "list",
            "--json",
            "--limit",
            "2",
            "--after",
            &after,
        ],
        "id",
    );
    assert_eq!(page, [ids[2].to_string(), ids[3].to_string()]);
    // A connection cursor is an id.
    let err = d.cli(&["connection", "list", "--after", "not-an-id"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("not an id"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    drop((admin, clients));
}
