//! Long listings page: `queue list` fetches everything a page at a time on one connection
//! (so a listing larger than a frame still works), and `--limit`/`--after` give one page.

mod common;

use common::{ok, within, TestDaemon};

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
