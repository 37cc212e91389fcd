//! Cloned machine ids (issue 13, item 10) end to end: two real agents with the same host id
//! (as two PCs cloned from one disk image derive it from the same machine id) but their own
//! state dirs are detected and counted once.

use dozor_tests::*;
use std::time::Duration;

const MO: &str = "1.2.643.5.1.13.13.12.2.27.3001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_machine_id_from_two_installs_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&Broker::Embedded(0), &dir.path().join("collector"), &[]);
    let args = ["--role", "workstation", "--interval-secs", "1"];
    let _a = Agent::start(&c.mqtt_url(), MO, "clone-01", &dir.path().join("a"), &args);
    let _b = Agent::start(&c.mqtt_url(), MO, "clone-01", &dir.path().join("b"), &args);
    let found = wait_for(Duration::from_secs(30), || async {
        let n = c.metric("dozor_cloned_machine_ids_total").await;
        (n >= 1.0).then_some(n)
    })
    .await
    .expect("the cloned id is detected within 30 s");
    assert_eq!(found, 1.0);
    // Both keep sending for a while: still one warning.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.metric("dozor_cloned_machine_ids_total").await, 1.0);
}
