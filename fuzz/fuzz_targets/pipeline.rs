//! The whole pipeline on arbitrary frames: classifier, caches, conntrack
//! with NAT (both directions, recirculation), select groups, learn, VLAN
//! push/pop, NORMAL, rewrites. Frames come in on any of three ports;
//! nothing may panic, loop or send a runt.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_dataplane::conntrack::nat::{NatKind, NatSpec};
use rvs_dataplane::conntrack::state::{EST, INV, NEW, TRK};
use rvs_dataplane::flow::action::{
    ofpp, Action, Bucket, CtAction, CtZone, GroupType, Learn, LearnSpec, LearnSrc,
};
use rvs_dataplane::flow::key::{Field, Match};
use rvs_dataplane::flow::table::{FlowMod, GroupCommand, GroupMod, OFPG_ANY};
use rvs_dataplane::snapshot::BridgeFlows;
use std::sync::Mutex;

#[path = "lab.rs"]
mod lab;

fn out(p: u32) -> Action {
    Action::Output {
        port: p,
        max_len: 0,
    }
}

fn ct(commit: bool, table: Option<u8>, nat: Option<NatSpec>) -> Action {
    Action::Ct(Box::new(CtAction {
        commit,
        force: false,
        zone: CtZone::Imm(7),
        table,
        alg: 0,
        nat,
        exec: if commit {
            vec![Action::SetField {
                field: Field::CtMark,
                value: 0x42,
                mask: u64::MAX,
            }]
        } else {
            Vec::new()
        },
    }))
}

fn m(fields: &[(Field, u64)]) -> Match {
    let mut m = Match::any();
    for &(f, v) in fields {
        m.exact(f, v);
    }
    m
}

/// A service-layer-like pipeline: DNAT of 10.0.0.100:80 through a select
/// group to two backends, SNAT out, learn, VLAN, NORMAL for the rest.
fn tables() -> std::sync::Arc<BridgeFlows> {
    let flows = BridgeFlows::new(0);
    {
        let mut t = flows.tables.lock().unwrap();
        let dnat = |ip: u32| NatSpec {
            kind: NatKind::Dst,
            ip_min: ip,
            ip_max: ip,
            port_min: 8080,
            port_max: 8081,
            persistent: false,
            hash: false,
            random: false,
        };
        t.group_mod(
            &GroupMod {
                command: GroupCommand::Add,
                kind: GroupType::Select,
                id: 1,
                buckets: [0x0a00_0001u32, 0x0a00_0002]
                    .iter()
                    .map(|&ip| Bucket {
                        weight: 1,
                        watch_port: ofpp::ANY,
                        watch_group: OFPG_ANY,
                        actions: vec![ct(true, Some(3), Some(dnat(ip)))],
                    })
                    .collect(),
                selection_method: "hash".into(),
                fields: vec![Field::NwSrc, Field::TpSrc],
            },
            0,
        )
        .unwrap();
        let ip = (Field::DlType, 0x800);
        let add = |t: &mut rvs_dataplane::flow::table::FlowTables, fm: FlowMod| {
            t.flow_mod(&fm, 0).unwrap();
        };
        add(
            &mut t,
            FlowMod::add(0, 100, m(&[ip]), vec![ct(false, Some(1), None)]),
        );
        add(
            &mut t,
            FlowMod::add(0, 90, m(&[(Field::DlType, 0x806)]), vec![out(ofpp::NORMAL)]),
        );
        add(
            &mut t,
            FlowMod::add(
                0,
                80,
                m(&[(Field::InPort, 3)]),
                vec![
                    Action::PushVlan(0x8100),
                    Action::SetVlanVid {
                        vid: 7,
                        push: false,
                    },
                    Action::DecTtl,
                    Action::Resubmit {
                        port: None,
                        table: Some(2),
                    },
                ],
            ),
        );
        let mut est = Match::any();
        est.set(Field::CtState, (TRK | EST) as u64, (TRK | EST) as u64);
        let mut new = Match::any();
        new.set(Field::CtState, (TRK | NEW) as u64, (TRK | NEW) as u64);
        new.exact(Field::DlType, 0x800);
        new.exact(Field::NwProto, 6);
        new.exact(Field::NwDst, 0x0a00_0064);
        new.exact(Field::TpDst, 80);
        let mut inv = Match::any();
        inv.set(Field::CtState, INV as u64, INV as u64);
        add(&mut t, FlowMod::add(1, 100, inv, vec![]));
        add(
            &mut t,
            FlowMod::add(
                1,
                90,
                est,
                vec![ct(
                    false,
                    Some(3),
                    Some(NatSpec {
                        kind: NatKind::Reverse,
                        ip_min: 0,
                        ip_max: 0,
                        port_min: 0,
                        port_max: 0,
                        persistent: false,
                        hash: false,
                        random: false,
                    }),
                )],
            ),
        );
        add(&mut t, FlowMod::add(1, 80, new, vec![Action::Group(1)]));
        add(
            &mut t,
            FlowMod::add(
                1,
                10,
                m(&[ip]),
                vec![ct(
                    true,
                    Some(3),
                    Some(NatSpec {
                        kind: NatKind::Src,
                        ip_min: 0xcb00_710a,
                        ip_max: 0xcb00_710b,
                        port_min: 1024,
                        port_max: 65535,
                        persistent: false,
                        hash: true,
                        random: false,
                    }),
                )],
            ),
        );
        add(
            &mut t,
            FlowMod::add(
                2,
                1,
                Match::any(),
                vec![
                    Action::Learn(Box::new(Learn {
                        table: 4,
                        priority: 5,
                        idle_timeout: 10,
                        hard_timeout: 0,
                        fin_idle_timeout: 0,
                        fin_hard_timeout: 0,
                        cookie: 9,
                        flags: 0,
                        specs: vec![
                            LearnSpec::Match {
                                src: LearnSrc::Field {
                                    field: Field::DlSrc,
                                    ofs: 0,
                                },
                                dst: Field::DlDst,
                                dst_ofs: 0,
                                n_bits: 48,
                            },
                            LearnSpec::Output {
                                src: LearnSrc::Field {
                                    field: Field::InPort,
                                    ofs: 0,
                                },
                                n_bits: 16,
                            },
                        ],
                    })),
                    Action::Resubmit {
                        port: None,
                        table: Some(4),
                    },
                ],
            ),
        );
        add(
            &mut t,
            FlowMod::add(
                4,
                0,
                Match::any(),
                vec![Action::StripVlan, out(ofpp::NORMAL)],
            ),
        );
        add(
            &mut t,
            FlowMod::add(
                3,
                1,
                Match::any(),
                vec![
                    Action::SetDlSrc(0x0200_0000_00aa),
                    Action::SetTpSrc(1),
                    out(ofpp::IN_PORT),
                    out(2),
                ],
            ),
        );
        flows.publish(&mut t, || {});
    }
    flows
}

fuzz_target!(|data: &[u8]| {
    static LAB: Mutex<Option<lab::Lab>> = Mutex::new(None);
    let mut g = LAB.lock().unwrap();
    let lab = g.get_or_insert_with(|| lab::Lab::new(tables()));
    let Some((&port, rest)) = data.split_first() else {
        return;
    };
    let frames = lab::frames(rest);
    lab.run(port as usize, &frames);
});
