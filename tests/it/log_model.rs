//! Property test: random appends, reads and reopenings against a simple in-memory model of the
//! log agree. A failing case prints its seed and shrinks; proptest keeps it in
//! `proptest-regressions/` next to this file for replay.

use std::collections::HashMap;

use ledger::{Append, Error, ExpectedVersion, Ledger, NewEvent};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expected: ExpectedKind,
        payloads: Vec<u8>,
        command_id: Option<u8>,
    },
    ReadStream {
        stream: u8,
        from: u64,
        max: usize,
    },
    ReadBackward {
        stream: u8,
        from: Option<u64>,
        max: usize,
    },
    ReadAll {
        from: u64,
        max: usize,
    },
    Reopen,
}

#[derive(Debug, Clone, Copy)]
enum ExpectedKind {
    Any,
    NoStream,
    StreamExists,
    ExactCurrent,
    ExactOff(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let expected = prop_oneof![
        Just(ExpectedKind::Any),
        Just(ExpectedKind::NoStream),
        Just(ExpectedKind::StreamExists),
        Just(ExpectedKind::ExactCurrent),
        (0u64..5).prop_map(ExpectedKind::ExactOff),
    ];
    prop_oneof![
        6 => (0u8..3, expected, prop::collection::vec(any::<u8>(), 1..4), prop::option::of(0u8..4))
            .prop_map(|(stream, expected, payloads, command_id)| Op::Append { stream, expected, payloads, command_id }),
        2 => (0u8..3, 0u64..8, 1usize..6).prop_map(|(stream, from, max)| Op::ReadStream { stream, from, max }),
        1 => (0u8..3, prop::option::of(0u64..8), 1usize..6).prop_map(|(stream, from, max)| Op::ReadBackward { stream, from, max }),
        2 => (0u64..20, 1usize..8).prop_map(|(from, max)| Op::ReadAll { from, max }),
        1 => Just(Op::Reopen),
    ]
}

/// What an idempotent append wrote: (stream, payloads, positions).
type CommandRecord = (String, Vec<Vec<u8>>, Vec<u64>);

#[derive(Default)]
struct Model {
    /// (stream, version, payload) in global order; position = index + 1.
    log: Vec<(String, u64, Vec<u8>)>,
    /// command id -> (stream, payloads, positions)
    commands: HashMap<String, CommandRecord>,
}

impl Model {
    fn version(&self, stream: &str) -> u64 {
        self.log.iter().filter(|(s, _, _)| s == stream).count() as u64
    }
    fn stream(&self, stream: &str) -> Vec<(u64, u64, Vec<u8>)> {
        self.log
            .iter()
            .enumerate()
            .filter(|(_, (s, _, _))| s == stream)
            .map(|(i, (_, v, p))| (i as u64 + 1, *v, p.clone()))
            .collect()
    }
}

fn shape(events: &[ledger::RecordedEvent]) -> Vec<(u64, u64, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.position, e.version, e.payload.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_agrees_with_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Some(Ledger::open(dir.path()).unwrap());
        let mut model = Model::default();
        for op in ops {
            let log = ledger.as_ref().unwrap();
            match op {
                Op::Append { stream, expected, payloads, command_id } => {
                    let stream = format!("s{stream}");
                    let current = model.version(&stream);
                    let expected = match expected {
                        ExpectedKind::Any => ExpectedVersion::Any,
                        ExpectedKind::NoStream => ExpectedVersion::NoStream,
                        ExpectedKind::StreamExists => ExpectedVersion::StreamExists,
                        ExpectedKind::ExactCurrent => ExpectedVersion::Exact(current),
                        ExpectedKind::ExactOff(v) => ExpectedVersion::Exact(v),
                    };
                    let events: Vec<NewEvent> = payloads.iter().map(|p| NewEvent::new("e", vec![*p])).collect();
                    let payload_bytes: Vec<Vec<u8>> = payloads.iter().map(|p| vec![*p]).collect();
                    let mut append = Append::new(stream.as_str(), expected, events);
                    let id = command_id.map(|c| format!("cmd-{c}"));
                    if let Some(id) = &id {
                        append = append.command_id(id.as_str());
                    }
                    let result = log.append_blocking(append);
                    // What the model says should happen.
                    let remembered = id.as_ref().and_then(|id| model.commands.get(id).cloned());
                    match remembered {
                        Some((s, p, positions)) => {
                            if s == stream && p == payload_bytes {
                                let appended = result.unwrap();
                                prop_assert!(appended.duplicate);
                                prop_assert_eq!(appended.events.iter().map(|e| e.position).collect::<Vec<_>>(), positions);
                            } else {
                                let reused = matches!(result, Err(Error::IdempotencyKeyReused { .. }));
                                prop_assert!(reused);
                            }
                        }
                        None => {
                            let ok = match expected {
                                ExpectedVersion::Any => true,
                                ExpectedVersion::NoStream => current == 0,
                                ExpectedVersion::StreamExists => current > 0,
                                ExpectedVersion::Exact(v) => v == current,
                            };
                            if ok {
                                let appended = result.unwrap();
                                prop_assert!(!appended.duplicate);
                                let mut positions = Vec::new();
                                for (offset, payload) in payload_bytes.iter().enumerate() {
                                    model.log.push((stream.clone(), current + 1 + offset as u64, payload.clone()));
                                    positions.push(model.log.len() as u64);
                                }
                                prop_assert_eq!(appended.events.iter().map(|e| e.position).collect::<Vec<_>>(), positions.clone());
                                if let Some(id) = id {
                                    model.commands.insert(id, (stream.clone(), payload_bytes, positions));
                                }
                            } else {
                                let conflict = matches!(result, Err(Error::VersionConflict { actual, .. }) if actual == current);
                                prop_assert!(conflict);
                            }
                        }
                    }
                    prop_assert_eq!(log.committed_position(), model.log.len() as u64);
                }
                Op::ReadStream { stream, from, max } => {
                    let stream = format!("s{stream}");
                    let got = shape(&log.read_stream(&stream, from, max).unwrap());
                    let want: Vec<_> = model.stream(&stream).into_iter().filter(|(_, v, _)| *v >= from.max(1)).take(max).collect();
                    prop_assert_eq!(got, want);
                }
                Op::ReadBackward { stream, from, max } => {
                    let stream = format!("s{stream}");
                    let got = shape(&log.read_stream_backward(&stream, from, max).unwrap());
                    let want: Vec<_> = model.stream(&stream).into_iter().rev().filter(|(_, v, _)| from.is_none_or(|f| *v <= f)).take(max).collect();
                    prop_assert_eq!(got, want);
                }
                Op::ReadAll { from, max } => {
                    let got = shape(&log.read_all(from, max).unwrap());
                    let want: Vec<_> = model.log.iter().enumerate()
                        .map(|(i, (_, v, p))| (i as u64 + 1, *v, p.clone()))
                        .filter(|(pos, _, _)| *pos >= from)
                        .take(max)
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Reopen => {
                    drop(ledger.take());
                    ledger = Some(Ledger::open(dir.path()).unwrap());
                }
            }
        }
        let report = ledger.as_ref().unwrap().verify().unwrap();
        prop_assert!(report.is_ok(), "{:?}", report.problem);
        prop_assert_eq!(report.events_checked, model.log.len() as u64);
    }
}
