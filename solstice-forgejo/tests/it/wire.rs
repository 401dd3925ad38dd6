//! What the runner puts on the wire, decoded with an independent protobuf reader and
//! checked against the documented field numbers.

use std::collections::BTreeMap;

use solstice_forgejo::Procedure;
use solstice_forgejo_fake::{FakeForgejo, JobSpec};

use crate::support::{Runner, WAIT, payload};

/// One decoded field: number → values (varints as numbers, length-delimited as bytes).
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
}

fn varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*pos];
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

fn fields(bytes: &[u8]) -> BTreeMap<u64, Vec<Field>> {
    let mut out: BTreeMap<u64, Vec<Field>> = BTreeMap::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos);
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(bytes, &mut pos)),
            2 => {
                let len = usize::try_from(varint(bytes, &mut pos)).unwrap();
                let data = bytes[pos..pos + len].to_vec();
                pos += len;
                Field::Bytes(data)
            }
            other => panic!("unexpected wire type {other} for field {number}"),
        };
        out.entry(number).or_default().push(field);
    }
    out
}

fn bytes(f: &Field) -> &[u8] {
    match f {
        Field::Bytes(b) => b,
        Field::Varint(v) => panic!("expected bytes, got varint {v}"),
    }
}

#[tokio::test]
async fn runner_messages_use_the_documented_field_numbers() {
    let fake = FakeForgejo::start().await.unwrap();
    let runner = Runner::start(&fake).await;
    let steps = "      - run: echo hello\n";
    let yaml = format!("{}    outputs:\n      o: fixed\n", payload(steps));
    let job = fake.enqueue(JobSpec::new("build", &yaml));
    let task = fake.wait_job_done(job, WAIT).await.expect("done");
    runner.stop().await.unwrap();

    // Register: 1 name, 2 token, 3 agent_labels, 5 version, 6 labels.
    let register = &fake.requests_of(Procedure::Register)[0];
    assert_eq!(register.header("content-type"), Some("application/proto"));
    assert_eq!(register.header("connect-protocol-version"), Some("1"));
    let f = fields(&register.body);
    assert_eq!(bytes(&f[&1][0]), b"test-runner");
    assert!(!bytes(&f[&2][0]).is_empty());
    assert_eq!(bytes(&f[&6][0]), b"host", "only the label name, not the spec");
    assert_eq!(bytes(&f[&3][0]), b"host");
    assert!(bytes(&f[&5][0]).starts_with(b"solstice-"));

    // Declare: 1 version, 2 labels; with the runner headers.
    let declare = &fake.requests_of(Procedure::Declare)[0];
    assert_eq!(declare.header("x-runner-uuid"), Some(runner_uuid(&fake).as_str()));
    assert!(declare.header("x-runner-token").is_some_and(|t| t.len() == 40));
    let f = fields(&declare.body);
    assert_eq!(bytes(&f[&2][0]), b"host");

    // FetchTask: 1 tasks_version, 2 task_capacity, and a request key.
    let fetch = &fake.requests_of(Procedure::FetchTask)[0];
    assert!(fetch.header("x-runner-request-key").is_some_and(|k| k.len() == 36));
    let f = fields(&fetch.body);
    assert!(!f.contains_key(&1), "tasks_version 0 is not sent");
    assert_eq!(f[&2], [Field::Varint(2)], "capacity 2, all free");

    // UpdateLog: 1 task_id, 2 index, 3 rows {1 time {1 seconds, 2 nanos}, 2 content}, 4 no_more.
    let logs = fake.requests_of(Procedure::UpdateLog);
    let first = fields(&logs[0].body);
    assert_eq!(first[&1], [Field::Varint(task.id as u64)]);
    assert!(!first.contains_key(&2), "index 0 is not sent");
    let row = fields(bytes(&first[&3][0]));
    let time = fields(bytes(&row[&1][0]));
    assert!(matches!(time[&1][0], Field::Varint(s) if s > 1_700_000_000));
    assert!(String::from_utf8_lossy(bytes(&row[&2][0])).contains("received task"));
    let last = fields(&logs.last().unwrap().body);
    assert_eq!(last[&4], [Field::Varint(1)], "the last UpdateLog says no_more");

    // UpdateTask: 1 state {1 id, 2 result, 3 started_at, 4 stopped_at, 5 steps {1 id,
    // 2 result, 3 started_at, 4 stopped_at, 5 log_index, 6 log_length}}, 2 outputs {1 key, 2 value}.
    let updates = fake.requests_of(Procedure::UpdateTask);
    let last = fields(&updates.last().unwrap().body);
    let state = fields(bytes(&last[&1][0]));
    assert_eq!(state[&1], [Field::Varint(task.id as u64)]);
    assert_eq!(state[&2], [Field::Varint(1)], "RESULT_SUCCESS = 1");
    assert!(state.contains_key(&3) && state.contains_key(&4));
    let step = fields(bytes(&state[&5][0]));
    assert!(!step.contains_key(&1), "step id 0 is not sent");
    assert_eq!(step[&2], [Field::Varint(1)]);
    assert!(step.contains_key(&3) && step.contains_key(&4) && step.contains_key(&5) && step.contains_key(&6));
    let output = fields(bytes(&last[&2][0]));
    assert_eq!((bytes(&output[&1][0]), bytes(&output[&2][0])), (&b"o"[..], &b"fixed"[..]));
    assert_eq!(task.outputs.get("o").map(String::as_str), Some("fixed"));

    // Order of the closing sequence: the final UpdateLog comes before the final UpdateTask.
    let all = fake.requests();
    let last_log = all.iter().rposition(|r| r.procedure == Procedure::UpdateLog).unwrap();
    let final_task = all.iter().position(|r| r.procedure == Procedure::UpdateTask && r.request["state"]["result"] == "RESULT_SUCCESS").unwrap();
    assert!(last_log < final_task);
}

fn runner_uuid(fake: &FakeForgejo) -> String {
    fake.runner_uuids().pop().unwrap()
}
