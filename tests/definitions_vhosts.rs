//! `definitions import` of a RabbitMQ export with several virtual hosts puts each object in
//! the virtual host its `vhost` field names, and refuses, before changing anything, a file
//! naming a virtual host that neither exists nor is in the file, or one that would pass
//! `--max-queues` / `--max-exchanges`.

mod common;

use common::{ok, TestDaemon};

/// A RabbitMQ 3.13 export (`rabbitmqctl export_definitions`) with two virtual hosts.
const RABBITMQ_EXPORT: &str = include_str!("fixtures/rabbitmq-multi-vhost.json");

fn names(d: &TestDaemon, args: &[&str], field: &str) -> Vec<String> {
    let all: Vec<serde_json::Value> = serde_json::from_str(&ok(&d.cli(args))).expect("JSON");
    all.iter()
        .map(|v| v[field].as_str().expect("a string").to_owned())
        .collect()
}

fn write(d: &TestDaemon, name: &str, text: &str) -> String {
    let path = d.data_dir().join(name);
    std::fs::write(&path, text).expect("writing the file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// stdout of an import that must succeed; its warnings (RabbitMQ's password hashes, which
/// Warren cannot verify) go to stderr.
fn imported(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings
            .lines()
            .all(|w| w.contains("cannot be verified by Warren") || w.contains("not imported")),
        "{warnings}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a command that must fail.
fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_rabbitmq_export_goes_to_the_vhosts_it_names() {
    let d = TestDaemon::start();
    let file = write(&d, "rabbit.json", RABBITMQ_EXPORT);
    let run = d.cli(&["definitions", "import", &file]);
    let out = imported(&run);
    assert!(
        out.contains("created 3 exchanges and 4 queues; 4 bindings in place"),
        "{out}"
    );
    // What Warren has no place for is named, not dropped silently; RabbitMQ's cluster name
    // (a global parameter every export has) is not worth a warning.
    let warnings = String::from_utf8_lossy(&run.stderr);
    assert!(
        warnings.contains(
            "warning: policy 'audit-ttl' in vhost 'orders' not imported: Warren has no \
             policies (give its definition to the queues as x- arguments)"
        ),
        "{warnings}"
    );
    assert!(!warnings.contains("cluster_name"), "{warnings}");

    assert_eq!(
        names(&d, &["vhost", "list", "--json"], "name"),
        ["/", "orders"]
    );
    assert_eq!(names(&d, &["queue", "list", "--json"], "name"), ["audit"]);
    assert_eq!(
        names(
            &d,
            &["queue", "list", "--json", "--vhost", "orders"],
            "name"
        ),
        ["audit", "billing.dead", "billing.invoices"]
    );
    let root_exchanges = names(&d, &["exchange", "list", "--json"], "name");
    assert!(root_exchanges.contains(&"events".to_owned()));
    assert!(!root_exchanges.contains(&"orders".to_owned()));
    assert_eq!(
        names(
            &d,
            &[
                "binding",
                "list",
                "--json",
                "--vhost",
                "orders",
                "--exchange",
                "orders"
            ],
            "destination"
        ),
        ["audit", "billing.invoices"]
    );
    // The same queue name in two virtual hosts is two queues, each with its own arguments.
    let audit: serde_json::Value = serde_json::from_str(&ok(
        &d.cli(&["queue", "inspect", "audit", "--json", "--vhost", "orders"])
    ))
    .expect("JSON");
    assert_eq!(audit["max_length"], 1000);
    let users = names(&d, &["user", "list", "--json"], "name");
    assert_eq!(users, ["billing", "guest"]);

    // Again: nothing new.
    let out = imported(&d.cli(&["definitions", "import", &file]));
    assert!(
        out.contains("created 0 exchanges and 0 queues; 4 bindings in place"),
        "{out}"
    );
}

#[test]
fn a_vhost_neither_existing_nor_in_the_file_refuses_the_whole_import() {
    let d = TestDaemon::start();
    let mut doc: serde_json::Value = serde_json::from_str(RABBITMQ_EXPORT).expect("JSON");
    doc["queues"]
        .as_array_mut()
        .expect("queues")
        .push(serde_json::json!({"name": "lost", "vhost": "staging", "durable": true}));
    let file = write(&d, "rabbit.json", &doc.to_string());
    let err = refused(&d.cli(&["definitions", "import", &file]));
    assert!(err.contains("NOT_FOUND (404)"), "{err}");
    assert!(
        err.contains("no vhost (of a definition) 'staging'"),
        "{err}"
    );
    // Nothing of it was applied: no vhost, user, queue or exchange.
    assert_eq!(names(&d, &["vhost", "list", "--json"], "name"), ["/"]);
    assert_eq!(names(&d, &["user", "list", "--json"], "name"), ["guest"]);
    assert!(names(&d, &["queue", "list", "--json"], "name").is_empty());
    assert!(!names(&d, &["exchange", "list", "--json"], "name").contains(&"events".to_owned()));
}

#[test]
fn an_import_past_the_queue_cap_is_refused_before_anything_changes() {
    // Two queues exist; the file's four would make six, past --max-queues 5. Exchanges
    // are declared before queues, so an import checked item by item would have created
    // them before failing.
    let d = TestDaemon::start_with(&["--max-queues", "5"]);
    ok(&d.cli(&["queue", "declare", "a"]));
    ok(&d.cli(&["queue", "declare", "b"]));
    let file = write(&d, "rabbit.json", RABBITMQ_EXPORT);
    let err = refused(&d.cli(&["definitions", "import", &file]));
    assert!(
        err.contains(
            "PRECONDITION_FAILED (406): definitions: importing would create 4 queues where 2 \
             exist, more than the server's queue limit (5; warren serve --max-queues); nothing \
             was imported"
        ),
        "{err}"
    );
    assert_eq!(names(&d, &["vhost", "list", "--json"], "name"), ["/"]);
    assert_eq!(names(&d, &["queue", "list", "--json"], "name"), ["a", "b"]);
    assert!(!names(&d, &["exchange", "list", "--json"], "name").contains(&"events".to_owned()));

    // Within the cap it goes through; an existing queue counts once.
    let d = TestDaemon::start_with(&["--max-queues", "4", "--max-exchanges", "3"]);
    ok(&d.cli(&[
        "queue",
        "declare",
        "audit",
        "--durable",
        "--arg",
        "x-queue-type=classic",
    ]));
    let file = write(&d, "rabbit.json", RABBITMQ_EXPORT);
    imported(&d.cli(&["definitions", "import", &file]));
}

#[test]
fn an_import_past_the_exchange_cap_is_refused_before_anything_changes() {
    let d = TestDaemon::start_with(&["--max-exchanges", "2"]);
    let file = write(&d, "rabbit.json", RABBITMQ_EXPORT);
    let err = refused(&d.cli(&["definitions", "import", &file]));
    assert!(
        err.contains("importing would create 3 exchanges where 0 exist, more than the server's exchange limit (2; warren serve --max-exchanges)"),
        "{err}"
    );
    assert_eq!(names(&d, &["vhost", "list", "--json"], "name"), ["/"]);
}

#[test]
fn warrens_own_export_of_a_vhost_round_trips_into_another() {
    let d = TestDaemon::start();
    let file = write(&d, "rabbit.json", RABBITMQ_EXPORT);
    imported(&d.cli(&["definitions", "import", &file]));
    // Warren's export is per virtual host and names none: it goes where it is imported.
    let exported = ok(&d.cli(&["definitions", "export", "--vhost", "orders"]));
    assert!(!exported.contains("\"vhost\": \"orders\",\n      \"name\""));
    ok(&d.cli(&["vhost", "add", "copy"]));
    d.grant_all("guest", "copy");
    let copy = write(&d, "orders.json", &exported);
    ok(&d.cli(&["definitions", "import", &copy, "--vhost", "copy"]));
    let again = ok(&d.cli(&["definitions", "export", "--vhost", "copy"]));
    let topology = |text: &str| {
        let mut v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        for key in ["users", "vhosts", "permissions"] {
            v.as_object_mut().expect("object").remove(key);
        }
        v
    };
    assert_eq!(topology(&again), topology(&exported));
}
