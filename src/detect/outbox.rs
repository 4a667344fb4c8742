//! The outbox strategy: a queue's messages are the changes. Each batch is
//! parsed, enqueued in one state-store transaction, and only then
//! acknowledged. A crash in between makes the queue deliver the messages
//! again; the ledger then holds their content hash, so each change is synced
//! once. A message that is not a change (not JSON, no key) goes dead with
//! its body, and is acknowledged: it would never get better.
use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use super::{Chunker, DetectError, DetectReport, Detection};
use crate::model::{hash_hex, key_of, key_text, parse_hash, Item, Op, Record};
use crate::state::{carried_prior, DetectedBatch, LedgerEntry};

pub async fn detect(d: Detection<'_>) -> Result<DetectReport, DetectError> {
    let mut chunker = Chunker::new(d);
    loop {
        let received = d.source.receive(d.job.batch.size).await?;
        let Some(last) = received.last().map(|r| r.ack) else {
            break;
        };
        let started = Instant::now();
        let scanned = received.len() as u64;
        chunker.report.scanned += scanned;
        chunker.report.read_whole += scanned;
        let mut by_key: HashMap<String, (Vec<Value>, Op, Record)> = HashMap::new();
        let mut order = Vec::new();
        let mut dead = Vec::new();
        for message in &received {
            match parse(&message.body, &d.job.source.key) {
                Ok((key, op, data)) => {
                    let text = key_text(&key);
                    // Later messages of a key win: one item per key per task.
                    if by_key.insert(text.clone(), (key, op, data)).is_none() {
                        order.push(text);
                    }
                }
                Err(why) => dead.push(malformed(&message.body, why)),
            }
        }
        // Every batch looks its keys up: an earlier batch of the same run
        // may have recorded them (a later delete must find them present).
        let ledger = d.store.ledger_written(&d.job.name, &order).await?;
        let mut batch = DetectedBatch {
            supersedes: Some(false),
            ..Default::default()
        };
        for text in order {
            // Every key in `order` was inserted into `by_key` just above.
            let (key, op, data) = by_key.remove(&text).expect("key collected above");
            let found = ledger.get(&text);
            let entry = found.map(|(entry, _)| entry);
            let item = match op {
                Op::Upsert => {
                    let item = Item::upsert(key, &data);
                    if !chunker.changed(&text, entry, parse_hash(&item.hash), &mut batch.supersedes)
                    {
                        continue;
                    }
                    Item {
                        prior: carried_prior(found),
                        ..item
                    }
                }
                Op::Delete => {
                    let present = entry.is_some_and(|e| !e.deleted);
                    if !present {
                        chunker.report.unchanged += 1;
                        continue;
                    }
                    if !d.job.ops.delete {
                        chunker.report.left_out += 1;
                        continue;
                    }
                    if entry.is_some_and(LedgerEntry::queued) {
                        batch.supersedes = Some(true);
                    }
                    chunker.report.deletes += 1;
                    Item::delete(key)
                }
            };
            batch.items.push(item);
            batch.keys.push(text);
        }
        chunker.commit(batch, scanned, started).await?;
        if let Some(first) = dead.first() {
            chunker.report.invalid += dead.len() as u64;
            chunker
                .report
                .first_invalid
                .get_or_insert_with(|| first.error.clone().unwrap_or_default());
        }
        if d.opts.dry_run {
            // Not acknowledged: the queue gets them back when the run ends.
            continue;
        }
        d.store.enqueue_dead(&d.job.name, d.run_id, &dead).await?;
        crate::fault::point("before-ack");
        d.source.acknowledge(last).await?;
    }
    Ok(chunker.report)
}

/// A message as a change: ferry's own envelope (`op`, `key`, `data`,
/// `children`), or a bare JSON object (an upsert keyed by `[source] key`).
fn parse(body: &[u8], key_columns: &[String]) -> Result<(Vec<Value>, Op, Record), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".to_string());
    };
    let enveloped = object.get("op").is_some_and(Value::is_string)
        && (object.contains_key("data") || object.contains_key("key"));
    if !enveloped {
        let key =
            key_of(&object, key_columns).map_err(|c| format!("no value in key column `{c}`"))?;
        return Ok((key, Op::Upsert, object));
    }
    let op = match object.get("op").and_then(Value::as_str) {
        Some("upsert") => Op::Upsert,
        Some("delete") => Op::Delete,
        other => {
            return Err(format!(
                "unknown op {other:?}; expected \"upsert\" or \"delete\""
            ))
        }
    };
    let mut data = match object.remove("data") {
        Some(Value::Object(d)) => d,
        None | Some(Value::Null) => Record::new(),
        Some(_) => return Err("`data` is not an object".to_string()),
    };
    if let Some(Value::Object(children)) = object.remove("children") {
        data.extend(children);
    }
    let key = match object.remove("key") {
        Some(Value::Array(k)) if !k.is_empty() => k,
        _ => key_of(&data, key_columns)
            .map_err(|c| format!("no `key` and no value in key column `{c}`"))?,
    };
    if op == Op::Upsert && data.is_empty() {
        return Err("an upsert without `data`".to_string());
    }
    Ok((key, op, data))
}

/// A dead item holding a message that is not a change, and why.
fn malformed(body: &[u8], why: String) -> Item {
    let text = String::from_utf8_lossy(body).into_owned();
    let body = Record::from_iter([("body".to_string(), Value::String(text))]);
    Item {
        hash: hash_hex(0),
        error: Some(format!("malformed message: {why}")),
        ..Item::upsert(Vec::new(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<String> {
        vec!["id".to_string()]
    }

    #[test]
    fn envelopes_and_bare_objects_are_changes() {
        let (k, op, data) = parse(
            br#"{"job":"x","key":[7],"op":"delete","version":3,"hash":"0"}"#,
            &key(),
        )
        .unwrap();
        assert_eq!((k, op, data.len()), (vec![Value::from(7)], Op::Delete, 0));
        let (k, op, data) = parse(
            br#"{"op":"upsert","data":{"id":1,"v":2},"children":{"lines":[]}}"#,
            &key(),
        )
        .unwrap();
        assert_eq!((k, op), (vec![Value::from(1)], Op::Upsert));
        assert!(data.contains_key("lines"));
        let (k, op, _) = parse(br#"{"id":5,"email":"a@x"}"#, &key()).unwrap();
        assert_eq!((k, op), (vec![Value::from(5)], Op::Upsert));
    }

    #[test]
    fn what_is_not_a_change_says_why() {
        assert!(parse(b"hello", &key()).unwrap_err().starts_with("not JSON"));
        assert_eq!(parse(b"[1]", &key()).unwrap_err(), "not a JSON object");
        assert_eq!(
            parse(br#"{"email":"a@x"}"#, &key()).unwrap_err(),
            "no value in key column `id`"
        );
        assert!(parse(br#"{"op":"merge","key":[1]}"#, &key())
            .unwrap_err()
            .starts_with("unknown op"));
    }
}
