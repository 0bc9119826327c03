//! Ports added and removed while traffic flows between two others: not one
//! frame of that traffic is lost or misdirected.
use rvs_tests::{virtio_user, Host, TestPmd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const A: &str = "02:00:00:00:00:0a";
const B: &str = "02:00:00:00:00:0b";

#[test]
fn port_churn_does_not_disturb_other_ports() {
    let h = Arc::new(Host::start("hp"));
    h.add_vhost_ports("br0", &["a", "b"]);
    let mut tp = TestPmd::start(
        "hp",
        &[
            virtio_user(0, &h.dir.join("a"), A),
            virtio_user(1, &h.dir.join("b"), B),
        ],
    );
    tp.cmd("start");
    h.wait_link_up(&["a", "b"]);
    // Learn both stations, then count from zero.
    tp.send(0, B, 1);
    tp.send(1, A, 1);
    tp.settle();
    tp.clear();
    h.appctl(&["dpif-netdev/pmd-stats-clear"]);

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (h, stop) = (h.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) || rounds < 3 {
                let v = format!("v{rounds}");
                let i = format!("i{rounds}");
                h.vsctl(&[
                    "add-port",
                    "br0",
                    &v,
                    "--",
                    "set",
                    "Interface",
                    &v,
                    "type=dpdkvhostuser",
                ]);
                h.vsctl(&[
                    "add-port",
                    "br0",
                    &i,
                    "--",
                    "set",
                    "Interface",
                    &i,
                    "type=internal",
                ]);
                h.vsctl(&[
                    "add-port",
                    "br0",
                    "x",
                    "tag=7",
                    "--",
                    "set",
                    "Interface",
                    "x",
                    "type=dpdkvhostuser",
                ]);
                h.vsctl(&["set", "Port", "x", "tag=8"]);
                h.vsctl(&["del-port", &v]);
                h.vsctl(&["del-port", &i]);
                h.vsctl(&["del-port", "x"]);
                rounds += 1;
            }
            rounds
        })
    };
    let mut sent = 0;
    for i in 0..12 {
        let n = 100 + i * 10;
        tp.send(i % 2, if i % 2 == 0 { B } else { A }, n);
        sent += n;
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = churn.join().unwrap();
    let c = tp.settle();
    assert!(rounds >= 3);
    // What testpmd got onto its 256-slot rings is what entered the switch.
    let sent_total = c[0].tx + c[1].tx;
    assert!(sent_total > sent as u64 / 2, "{sent_total} of {sent}");
    assert_eq!(
        (c[1].rx, c[0].rx),
        (c[0].tx, c[1].tx),
        "every frame arrived, at its learned port only"
    );
    let pmd = h.appctl(&["dpif-netdev/pmd-stats-show"]);
    assert!(pmd.contains("  packets dropped: 0\n"), "{pmd}");
    assert!(
        pmd.contains(&format!("  packets received: {sent_total}\n")),
        "{pmd}"
    );
    assert_eq!(h.vsctl(&["list-ports", "br0"]), "a\nb\n");
    let dp = h.appctl(&["dpif/show"]);
    assert_eq!(
        dp.lines().filter(|l| l.starts_with("    ")).count(),
        3,
        "{dp}"
    );
    tp.quit();
}
