//! External sort by ledger key text, in bounded memory: full buffers are
//! sorted and spilled to anonymous temporary files (runs), and the runs are
//! merged back lazily. The diff strategy walks a sorted source scan beside
//! the ledger this way, and a mirror a sorted list of the target's keys,
//! without ever holding a table in memory. The diff sorts only keys, hashes
//! and where each object lies in an [`ObjectSpill`]: the objects are written
//! once, in scan order, and read back only when they changed.
//!
//! The order is bytewise, as Rust compares `str`: the same order as the
//! ledger's `ORDER BY key` (SQLite's BINARY collation, PostgreSQL's "C").
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};

/// Bytes of sort entries held before a run is spilled.
pub const SORT_MEMORY: usize = 8 << 20;
/// Memory per buffered entry beyond its key's bytes: the struct, with room
/// for the buffer's growth, and the key's heap header.
const ENTRY_OVERHEAD: usize = 2 * std::mem::size_of::<Entry>() + 16;
const RUN_READ_BUFFER: usize = 8 << 10;
const SPILL_WRITE_BUFFER: usize = 64 << 10;

/// One object: its ledger key text, content hash, and where the caller keeps
/// the rest of it (a position in an [`ObjectSpill`]).
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub hash: i64,
    pub at: u64,
}

pub struct Sorter {
    buffered: Vec<Entry>,
    bytes: usize,
    limit: usize,
    runs: Vec<File>,
}

impl Sorter {
    pub fn new(limit: usize) -> Self {
        Sorter {
            buffered: Vec::new(),
            bytes: 0,
            limit,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, entry: Entry) -> io::Result<()> {
        self.bytes += entry.key.capacity() + ENTRY_OVERHEAD;
        self.buffered.push(entry);
        if self.bytes >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// How many runs went to disk so far.
    pub fn spilled_runs(&self) -> usize {
        self.runs.len()
    }

    fn spill(&mut self) -> io::Result<()> {
        let mut entries = std::mem::take(&mut self.buffered);
        self.bytes = 0;
        // A stable sort keeps later duplicates of a key after earlier ones.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = temp_writer()?;
        for e in &entries {
            write_entry(&mut out, e)?;
        }
        self.runs.push(written(out)?);
        // Kept for the next run: growing the buffer again would hold the
        // old and the new allocation at once.
        entries.clear();
        self.buffered = entries;
        Ok(())
    }

    /// Every pushed entry in key order; of several with one key, the last pushed.
    pub fn finish(mut self) -> io::Result<Merged> {
        // Once a run went to disk, the rest follows: the merge then holds
        // read buffers only, not a full sort buffer while the sync's run
        // beside it (the diff's peak was 5 MiB of buffer and its keys).
        if !self.runs.is_empty() && !self.buffered.is_empty() {
            self.spill()?;
        }
        let mut runs: Vec<Run> = Vec::with_capacity(self.runs.len() + 1);
        for file in std::mem::take(&mut self.runs) {
            runs.push(Run::File(BufReader::with_capacity(RUN_READ_BUFFER, file)));
        }
        let mut last = std::mem::take(&mut self.buffered);
        if !last.is_empty() {
            last.sort_by(|a, b| a.key.cmp(&b.key));
            runs.push(Run::Memory(last.into_iter()));
        }
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (index, run) in runs.iter_mut().enumerate() {
            if let Some(entry) = run.next()? {
                heap.push(Head { entry, run: index });
            }
        }
        Ok(Merged { runs, heap })
    }
}

enum Run {
    File(BufReader<File>),
    Memory(std::vec::IntoIter<Entry>),
}

impl Run {
    fn next(&mut self) -> io::Result<Option<Entry>> {
        match self {
            Run::Memory(entries) => Ok(entries.next()),
            Run::File(file) => read_entry(file),
        }
    }
}

/// A run's smallest unread entry. The heap pops the smallest key first and,
/// for equal keys, the earlier run first, so later entries replace earlier.
struct Head {
    entry: Entry,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.entry.key.as_str(), other.run).cmp(&(self.entry.key.as_str(), self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

pub struct Merged {
    runs: Vec<Run>,
    heap: BinaryHeap<Head>,
}

impl Merged {
    fn pop(&mut self) -> io::Result<Option<Entry>> {
        let Some(Head { entry, run }) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.runs[run].next()? {
            self.heap.push(Head { entry: next, run });
        }
        Ok(Some(entry))
    }

    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let Some(mut current) = self.pop()? else {
            return Ok(None);
        };
        while self.heap.peek().is_some_and(|h| h.entry.key == current.key) {
            // The peeked head exists: `pop` returns it.
            current = self.pop()?.expect("peeked entry");
        }
        Ok(Some(current))
    }
}

fn write_entry(out: &mut impl Write, e: &Entry) -> io::Result<()> {
    out.write_all(&(e.key.len() as u32).to_le_bytes())?;
    out.write_all(e.key.as_bytes())?;
    out.write_all(&e.hash.to_le_bytes())?;
    out.write_all(&e.at.to_le_bytes())
}

fn read_entry(input: &mut impl Read) -> io::Result<Option<Entry>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut key)?;
    let key = String::from_utf8(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut hash = [0u8; 8];
    input.read_exact(&mut hash)?;
    let mut at = [0u8; 8];
    input.read_exact(&mut at)?;
    Ok(Some(Entry {
        key,
        hash: i64::from_le_bytes(hash),
        at: u64::from_le_bytes(at),
    }))
}

/// A buffered writer into a new anonymous temporary file.
fn temp_writer() -> io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(
        SPILL_WRITE_BUFFER,
        tempfile::tempfile()?,
    ))
}

/// The file `out` wrote, flushed and rewound for reading.
fn written(out: BufWriter<File>) -> io::Result<File> {
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.rewind()?;
    Ok(file)
}

/// Lines held in an anonymous temporary file until they are read back once:
/// what a merge finds to delete, kept until the delete guard has seen it all.
pub struct LineSpill {
    out: BufWriter<File>,
    count: u64,
}

impl LineSpill {
    pub fn new() -> io::Result<Self> {
        Ok(LineSpill {
            out: temp_writer()?,
            count: 0,
        })
    }

    /// Appends one line made of `parts`, which must hold no line break.
    pub fn push(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            self.out.write_all(part)?;
        }
        self.out.write_all(b"\n")?;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn into_lines(self) -> io::Result<io::Lines<BufReader<File>>> {
        Ok(BufReader::new(written(self.out)?).lines())
    }
}

/// Objects written once, in the order they were scanned, to an anonymous
/// temporary file, and read back by position: a diff sorts where each
/// object lies instead of the object itself, and reads only the changed ones.
pub struct ObjectSpill {
    out: BufWriter<File>,
    end: u64,
}

impl ObjectSpill {
    pub fn new() -> io::Result<Self> {
        Ok(ObjectSpill {
            out: temp_writer()?,
            end: 0,
        })
    }

    /// Appends `object` and returns its position.
    pub fn push(&mut self, object: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(object.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an object over 4 GiB"))?;
        let at = self.end;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(object)?;
        self.end += 4 + u64::from(len);
        Ok(at)
    }

    pub fn finish(self) -> io::Result<SpilledObjects> {
        Ok(SpilledObjects {
            file: written(self.out)?,
        })
    }
}

pub struct SpilledObjects {
    file: File,
}

impl SpilledObjects {
    /// The object [`ObjectSpill::push`] put at `at`.
    pub fn read(&self, at: u64) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut len = [0u8; 4];
        self.file.read_exact_at(&mut len, at)?;
        let mut object = vec![0u8; u32::from_le_bytes(len) as usize];
        self.file.read_exact_at(&mut object, at + 4)?;
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, hash: i64) -> Entry {
        Entry {
            key: key.to_string(),
            hash,
            at: key.len() as u64 * 1000 + hash as u64,
        }
    }

    fn drain(mut merged: Merged) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        while let Some(e) = merged.next_entry().unwrap() {
            assert_eq!(e.at, e.key.len() as u64 * 1000 + e.hash as u64);
            out.push((e.key, e.hash));
        }
        out
    }

    #[test]
    fn merges_spilled_runs_in_bytewise_key_order() {
        // A limit this small spills a run every few entries.
        let mut sorter = Sorter::new(200);
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("[{}]", (i * 7919) % 1000))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            sorter.push(entry(k, i as i64)).unwrap();
        }
        assert!(sorter.spilled_runs() > 10);
        let got = drain(sorter.finish().unwrap());
        let mut want: Vec<String> = keys.clone();
        want.sort();
        assert_eq!(got.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want);
        assert_eq!(got.first().unwrap().0, "[0]");
        assert_eq!(got[1].0, "[100]", "bytewise, not numeric order");
    }

    #[test]
    fn the_last_pushed_duplicate_wins_within_and_across_runs() {
        let mut sorter = Sorter::new(150);
        for round in 0..3 {
            for k in ["[\"b\"]", "[\"a\"]", "[\"b\"]"] {
                sorter.push(entry(k, round)).unwrap();
            }
        }
        sorter.push(entry("[\"a\"]", 99)).unwrap();
        assert!(sorter.spilled_runs() > 0);
        assert_eq!(
            drain(sorter.finish().unwrap()),
            vec![("[\"a\"]".to_string(), 99), ("[\"b\"]".to_string(), 2)]
        );
    }

    #[test]
    fn spilled_objects_read_back_by_position_in_any_order() {
        let mut spill = ObjectSpill::new().unwrap();
        let objects: Vec<String> = (0..5000).map(|i| format!("{{\"id\":{i}}}")).collect();
        let positions: Vec<u64> = objects
            .iter()
            .map(|o| spill.push(o.as_bytes()).unwrap())
            .collect();
        let spilled = spill.finish().unwrap();
        for i in (0..5000).rev().step_by(7) {
            assert_eq!(spilled.read(positions[i]).unwrap(), objects[i].as_bytes());
        }
        let end = positions[4999] + 4 + objects[4999].len() as u64;
        assert!(spilled.read(end).is_err(), "nothing lies past the end");
    }

    #[test]
    fn an_empty_sorter_yields_nothing() {
        assert!(drain(Sorter::new(SORT_MEMORY).finish().unwrap()).is_empty());
    }
}
