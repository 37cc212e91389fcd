//! Structure-aware fuzz target for `dozor_proto::decode`: starts from a valid message of each
//! kind (`dozor_fuzz::template`) and applies edits the input chooses to its JSON tree — any
//! node set to an arbitrary or boundary number, string, bool or null, keys removed or added,
//! array elements repeated — then serializes it and decodes it on a topic built from the
//! message's own `mo`/`host`. Byte-level mutation (the `decode` target) rarely changes a number
//! by orders of magnitude or grows an array past a limit; this target does it in one step.
//!
//! The invariants checked are those of `dozor_fuzz::check` (`fuzz/src/lib.rs`).

#![no_main]

use dozor_fuzz::{HOST, LIMITS, MO, check, template};
use dozor_proto::Kind;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const KINDS: [Kind; 4] = [Kind::Birth, Kind::State, Kind::Hb, Kind::Probe];

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured) -> Result<()> {
    let sel: u8 = u.arbitrary()?;
    let kind = KINDS[usize::from(sel & 3)];
    // Mostly the template's own kind on the topic; sometimes another one.
    let topic_kind = if sel & 0x1c == 0 {
        KINDS[usize::from((sel >> 5) & 3)]
    } else {
        kind
    };
    let mut doc = template(kind);
    for _ in 0..u.int_in_range(0..=6)? {
        edit(u, &mut doc)?;
    }
    let id = |name: &str, default: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let topic = format!(
        "dozor/v1/{}/{}/{}",
        id("mo", MO),
        id("host", HOST),
        topic_kind.as_str()
    );
    let payload = serde_json::to_vec(&doc).expect("a JSON tree serializes");
    check(&topic, &payload);
    Ok(())
}

/// Walks down from the root to a random node: at each level it stops at the current node or
/// goes into a child. From the root it goes into `body` half of the time, as most fields are
/// there. Allocates nothing, however large the document.
fn pick<'a>(u: &mut Unstructured, doc: &'a mut Value) -> Result<&'a mut Value> {
    let mut cur = if u.arbitrary()? && doc.get("body").is_some() {
        doc.get_mut("body").expect("checked")
    } else {
        doc
    };
    loop {
        let n = match &*cur {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if n == 0 {
            return Ok(cur);
        }
        let i = u.choose_index(n + 1)?;
        if i == n {
            return Ok(cur);
        }
        cur = match cur {
            Value::Object(m) => m.values_mut().nth(i).expect("i < len"),
            Value::Array(a) => &mut a[i],
            _ => unreachable!("n > 0 only for containers"),
        };
    }
}

const INTS: [i128; 30] = [
    0,
    1,
    -1,
    2,
    64,
    65,
    255,
    256,
    257,
    4096,
    4097,
    86_400,
    86_401,
    3_600_000,
    3_600_001,
    u32::MAX as i128,
    u32::MAX as i128 + 1,
    (1 << 50),
    (1 << 50) + 1,
    LIMITS.min_ts_ms as i128,
    LIMITS.min_ts_ms as i128 - 1,
    LIMITS.max_ts_ms as i128,
    LIMITS.max_ts_ms as i128 + 1,
    i64::MAX as i128 / 1000,
    i64::MAX as i128 / 1000 + 1,
    i64::MIN as i128 / 1000 - 1,
    i64::MAX as i128,
    i64::MIN as i128,
    u64::MAX as i128,
    u64::MAX as i128 + 1,
];

const FLOATS: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    100.0,
    100.5,
    100.50001,
    -1e-45,
    1e-45,
    1e-40,
    999_999.9,
    1e6,
    f32::MAX as f64,
    3.5e38,
    1e300,
    16_777_217.0,
    0.1,
];

const WORDS: [&str; 30] = [
    "",
    "mis",
    "iemk",
    "lis",
    "pacs",
    "erecipe",
    "tmk",
    "patient_flow",
    "mse",
    "fss",
    "smp",
    "sanavia",
    "other",
    "workstation",
    "server",
    "online",
    "offline",
    "lost",
    "dns",
    "connect",
    "timeout",
    "tls",
    "http_status",
    "a1b2c3",
    "pc-01",
    MO,
    ".x",
    "a b",
    "мо",
    "MIS",
];

const KEYS: [&str; 12] = [
    "v",
    "replay",
    "reason",
    "load",
    "spool",
    "oldest_seq",
    "latency_ms",
    "error",
    "status",
    "fs",
    "extra",
    "body",
];

fn number(i: i128) -> Value {
    if let Ok(x) = i64::try_from(i) {
        json!(x)
    } else if let Ok(x) = u64::try_from(i) {
        json!(x)
    } else {
        // Out of range of both: serde_json keeps the digits with arbitrary_precision only, so
        // use a float that rounds to the same magnitude.
        json!(i as f64)
    }
}

fn string(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => u.arbitrary::<String>()?,
        1 => {
            // Around the string length limit, in one- and multi-byte characters.
            let c = *u.choose(&['x', 'я', '№', '\u{7}', '\u{85}', '\u{2028}', '/', '"'])?;
            let n = LIMITS.max_string_len - 2 + usize::from(u.int_in_range(0u8..=4)?);
            std::iter::repeat_n(c, n / c.len_utf8()).collect()
        }
        _ => (*u.choose(&WORDS)?).to_owned(),
    })
}

fn scalar(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 => json!(u.arbitrary::<i64>()?),
        1 => json!(u.arbitrary::<u64>()?),
        2 => json!(u.arbitrary::<u32>()?),
        3 | 4 => number(*u.choose(&INTS)? + i128::from(u.int_in_range(-1i8..=1)?)),
        5 => json!(f64::from(u.arbitrary::<f32>()?)),
        6 => json!(*u.choose(&FLOATS)?),
        7 => json!(u.arbitrary::<bool>()?),
        8 => Value::Null,
        _ => json!(string(u)?),
    })
}

fn edit(u: &mut Unstructured, doc: &mut Value) -> Result<()> {
    let op = u.int_in_range(0..=9)?;
    let node = pick(u, doc)?;
    match (op, node) {
        // Replace the node with a scalar (most edits).
        (0..=5, n) => *n = scalar(u)?,
        // Remove a member or an element.
        (6, Value::Object(m)) if !m.is_empty() => {
            let i = u.choose_index(m.len())?;
            let k = m.keys().nth(i).expect("i < len").clone();
            m.remove(&k);
        }
        (6, Value::Array(a)) if !a.is_empty() => {
            let i = u.choose_index(a.len())?;
            a.remove(i);
        }
        // Repeat an element up to past the count limits, or empty the array.
        (7, Value::Array(a)) if !a.is_empty() => {
            let e = a[u.choose_index(a.len())?].clone();
            let n = *u.choose(&[0, 2, LIMITS.max_disks, LIMITS.max_disks + 1, 300])?;
            *a = vec![e; n];
        }
        // Add a member (known or not).
        (8, Value::Object(m)) => {
            m.insert((*u.choose(&KEYS)?).to_owned(), scalar(u)?);
        }
        // Replace the node with an empty or one-key object or an array of scalars.
        (9, n) => {
            *n = match u.int_in_range(0..=2)? {
                0 => Value::Object(Map::new()),
                1 => {
                    let mut m = Map::new();
                    m.insert((*u.choose(&KEYS)?).to_owned(), scalar(u)?);
                    Value::Object(m)
                }
                _ => Value::Array(vec![scalar(u)?, scalar(u)?, scalar(u)?]),
            };
        }
        _ => {}
    }
    Ok(())
}
