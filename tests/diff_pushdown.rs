//! The diff with hashes the source computes: over 30 runs of random inserts,
//! updates (real ones, rewrites of the same values, and changes undone
//! before the run) and deletes on a 200,000-row table, each `plan` and each
//! run finds exactly the keys that changed, reads whole only the rows of
//! new and changed keys, and leaves the target equal to the source — on
//! both state stores. A ledger written before the source hashed (no source
//! hashes) is read whole once, and finds the same changes. On PostgreSQL
//! and MariaDB sources.
mod common;

use std::collections::BTreeSet;

use common::*;

const ROWS: i64 = 200_000;
const RUNS: usize = 30;

/// A small deterministic generator (xorshift64*): the same runs every time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The database holding both tables (`src` and `dst`).
enum Db {
    Postgres(TestDb),
    Mariadb(MysqlDb),
}

impl Db {
    async fn exec(&self, sql: &str) {
        match self {
            Db::Postgres(db) => db.exec(sql).await,
            Db::Mariadb(db) => db.exec(sql).await,
        }
    }

    fn url(&self) -> &str {
        match self {
            Db::Postgres(db) => &db.url,
            Db::Mariadb(db) => &db.url,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Mariadb(_) => "mysql",
        }
    }

    async fn create(&self) {
        let at = match self {
            Db::Postgres(_) => "timestamptz",
            Db::Mariadb(_) => "datetime(6)",
        };
        let columns = format!(
            "id bigint PRIMARY KEY, name text, qty int, price numeric(12,2), note text, at {at}"
        );
        self.exec(&format!(
            "CREATE TABLE src ({columns}); CREATE TABLE dst ({columns});"
        ))
        .await;
    }

    /// Inserts the rows of ids `lo..=hi`.
    async fn insert(&self, lo: i64, hi: i64) {
        if lo > hi {
            return;
        }
        let (ids, at) = match self {
            Db::Postgres(_) => (
                format!("generate_series({lo}, {hi}) AS t(g)"),
                "timestamptz '2026-01-01' + g * interval '1 second'",
            ),
            Db::Mariadb(_) => (
                format!("(SELECT seq AS g FROM seq_{lo}_to_{hi}) AS t"),
                "TIMESTAMP '2026-01-01 00:00:00' + INTERVAL g SECOND",
            ),
        };
        self.exec(&format!(
            "INSERT INTO src SELECT g, concat('n', g), g % 100, (g % 1000) / 7.0, \
             CASE WHEN g % 5 = 0 THEN NULL ELSE 'x' END, {at} FROM {ids}"
        ))
        .await;
    }

    fn later(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "at = at + interval '1 microsecond'",
            Db::Mariadb(_) => "at = at + INTERVAL 1 MICROSECOND",
        }
    }

    /// Rows of `src` and `dst` that differ, either way.
    async fn differences(&self) -> i64 {
        match self {
            Db::Postgres(db) => {
                db.difference("SELECT * FROM src", "SELECT * FROM dst")
                    .await
            }
            Db::Mariadb(db) => {
                let one_way = |a: &str, b: &str| {
                    format!(
                        "(SELECT count(*) FROM {a} AS a LEFT JOIN {b} AS b ON b.id = a.id WHERE b.id IS NULL \
                         OR NOT (a.name <=> b.name AND a.qty <=> b.qty AND a.price <=> b.price \
                         AND a.note <=> b.note AND a.at <=> b.at))"
                    )
                };
                let sql = format!(
                    "SELECT {} + {}",
                    one_way("src", "dst"),
                    one_way("dst", "src")
                );
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&db.pool)
                    .await
                    .expect("compare src and dst")
            }
        }
    }
}

/// The source's keys as the test knows them, and what one round changed.
struct Table {
    live: Vec<i64>,
    next_id: i64,
}

#[derive(Default, Debug)]
struct Round {
    inserts: BTreeSet<i64>,
    updates: BTreeSet<i64>,
    deletes: BTreeSet<i64>,
    /// Rows rewritten with their own values, or changed and changed back.
    untouched: BTreeSet<i64>,
}

impl Table {
    /// Up to `n` distinct live keys within `window` (of the live keys in
    /// key order), none of `taken`, taken out of the pool for this round.
    fn pick(
        &self,
        rng: &mut Rng,
        n: u64,
        window: (usize, usize),
        taken: &mut BTreeSet<i64>,
    ) -> BTreeSet<i64> {
        let mut picked = BTreeSet::new();
        let (from, len) = window;
        for _ in 0..n {
            let id = self.live[from + rng.below(len as u64) as usize];
            if taken.insert(id) {
                picked.insert(id);
            }
        }
        picked
    }

    /// Random changes of every kind; returns the ones the diff must find.
    async fn change(&mut self, db: &Db, rng: &mut Rng, round: usize) -> Round {
        let mut taken = BTreeSet::new();
        let (updates, deletes, untouched) = (rng.below(1500) + 1, rng.below(150), rng.below(300));
        self.live.sort_unstable();
        // Two rounds in every four change one stretch of keys only, as most
        // tables change: the diff then reads the buckets around it alone
        // (the first of the two still reads every pair, as the round before
        // changed most buckets).
        let window = match round % 4 {
            2 | 3 => {
                let len = 10_000.min(self.live.len());
                (rng.below((self.live.len() - len) as u64 + 1) as usize, len)
            }
            _ => (0, self.live.len()),
        };
        let mut r = Round {
            updates: self.pick(rng, updates, window, &mut taken),
            deletes: self.pick(rng, deletes, window, &mut taken),
            untouched: self.pick(rng, untouched, window, &mut taken),
            ..Round::default()
        };
        let inserts = rng.below(400);
        r.inserts = (self.next_id..self.next_id + inserts as i64).collect();
        self.next_id += inserts as i64;
        // Each round changes another column, NULLs included.
        let set = [
            "name = concat(name, 'u')",
            "qty = qty + 1",
            "price = price + 0.01",
            "note = CASE WHEN note IS NULL THEN 'n' ELSE NULL END",
            db.later(),
        ][round % 5];
        let (untouched, undone) = split_half(&r.untouched);
        db.exec(&format!(
            "UPDATE src SET {set} WHERE id IN ({updates});
             UPDATE src SET name = name, qty = qty WHERE id IN ({untouched});
             UPDATE src SET qty = qty + 7 WHERE id IN ({undone});
             UPDATE src SET qty = qty - 7 WHERE id IN ({undone});
             DELETE FROM src WHERE id IN ({deletes});",
            updates = list(&r.updates),
            deletes = list(&r.deletes),
        ))
        .await;
        db.insert(self.next_id - inserts as i64, self.next_id - 1)
            .await;
        self.live.retain(|id| !r.deletes.contains(id));
        self.live.extend(&r.inserts);
        r
    }
}

fn split_half(keys: &BTreeSet<i64>) -> (String, String) {
    let (a, b): (Vec<i64>, Vec<i64>) = keys.iter().partition(|k| *k % 2 == 0);
    (list(&a), list(&b))
}

/// Keys for `IN (…)`; `NULL` (which matches nothing) when there are none.
fn list<'a>(keys: impl IntoIterator<Item = &'a i64>) -> String {
    let list: Vec<String> = keys.into_iter().map(i64::to_string).collect();
    match list.is_empty() {
        true => "NULL".to_string(),
        false => list.join(","),
    }
}

/// The keys of one kind a plan lists, as integers.
fn listed(plan: &serde_json::Value, kind: &str) -> BTreeSet<i64> {
    plan["keys"][kind]
        .as_array()
        .unwrap_or_else(|| panic!("plan lists no {kind}: {plan}"))
        .iter()
        .map(|k| {
            let key: Vec<i64> =
                serde_json::from_str(k.as_str().expect("a key text")).expect("[id]");
            key[0]
        })
        .collect()
}

/// The ledger as a ferry that did not hash in the source left it.
async fn forget_source_hashes(kind: StateKind, state: &str, state_db: &TestDb) {
    let sql = "UPDATE ferry_ledger SET source_hash = NULL; DELETE FROM ferry_range_digests;";
    match kind {
        StateKind::Postgres => state_db.exec(sql).await,
        StateKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(state)
                .await
                .expect("open the state file");
            sqlx::raw_sql(sql)
                .execute(&pool)
                .await
                .expect("forget hashes");
            pool.close().await;
        }
    }
}

async fn finds_exactly_the_changes(db: Db, kind: StateKind) {
    let state_db = TestDb::new().await;
    db.create().await;
    let mut table = Table {
        live: (1..=ROWS).collect(),
        next_id: ROWS + 1,
    };
    db.insert(1, ROWS).await;
    let cfg = ConfigDir::new();
    let (system, url) = (db.kind(), db.url());
    cfg.job(
        "copy",
        &format!(
            "[source]\ntype = \"{system}\"\nurl = \"{url}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\nmax_delete_ratio = 0.9\n\n[batch]\nsize = 5000\n\n\
             [target]\ntype = \"{system}\"\nurl = \"{url}\"\ntable = \"dst\"\nkey = [\"id\"]\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n"
        ),
    );
    let state = state_url(kind, &cfg, &state_db);
    let first = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
    assert_eq!(code(&first), 0, "{kind:?}: first run: {}", stderr(&first));

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 1..=RUNS {
        let forgotten = round == RUNS / 2;
        if forgotten {
            forget_source_hashes(kind, &state, &state_db).await;
        }
        let r = table.change(&db, &mut rng, round).await;
        let at = format!("{system} source, {kind:?} state, round {round}");

        let plan = cfg.ferry(
            Some(&state),
            &["--output", "json", "plan", "--limit", "100000", "copy"],
        );
        assert_eq!(code(&plan), 0, "{at}: plan: {}", stderr(&plan));
        let plan = summary_run(&plan, "copy");
        assert_eq!(listed(&plan, "inserts"), r.inserts, "{at}: planned inserts");
        assert_eq!(listed(&plan, "updates"), r.updates, "{at}: planned updates");
        assert_eq!(listed(&plan, "deletes"), r.deletes, "{at}: planned deletes");

        let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
        assert_eq!(code(&out), 0, "{at}: run: {}", stderr(&out));
        let run = summary_run(&out, "copy");
        let count = |f: &str| {
            run[f]
                .as_u64()
                .unwrap_or_else(|| panic!("{at}: {f} in {run}"))
        };
        assert_eq!(count("inserts"), r.inserts.len() as u64, "{at}: {run}");
        assert_eq!(count("updates"), r.updates.len() as u64, "{at}: {run}");
        assert_eq!(count("deletes"), r.deletes.len() as u64, "{at}: {run}");
        assert_eq!(count("scanned"), table.live.len() as u64, "{at}: {run}");
        let changed_rows = (r.inserts.len() + r.updates.len()) as u64;
        let hashes = count("read_hashes");
        match forgotten {
            // Every key's source hash unknown: every row read whole once.
            true => {
                assert_eq!(count("read_whole"), table.live.len() as u64, "{at}: {run}");
                assert_eq!(hashes, table.live.len() as u64, "{at}: no digests: {run}");
            }
            false => assert_eq!(
                count("read_whole"),
                changed_rows,
                "{at}: only changed rows leave the source: {run}"
            ),
        }
        if round % 4 == 3 && !forgotten {
            assert!(
                hashes < table.live.len() as u64 / 4,
                "{at}: the buckets of one stretch of keys are read alone: {run}"
            );
        }
        assert_eq!(
            db.differences().await,
            0,
            "{at}: the target equals the source"
        );
    }
}

#[tokio::test]
async fn postgres_source_sqlite_state() {
    finds_exactly_the_changes(Db::Postgres(TestDb::new().await), StateKind::Sqlite).await;
}

#[tokio::test]
async fn postgres_source_postgres_state() {
    finds_exactly_the_changes(Db::Postgres(TestDb::new().await), StateKind::Postgres).await;
}

#[tokio::test]
async fn mariadb_source_sqlite_state() {
    finds_exactly_the_changes(Db::Mariadb(MysqlDb::new().await), StateKind::Sqlite).await;
}

#[tokio::test]
async fn mariadb_source_postgres_state() {
    finds_exactly_the_changes(Db::Mariadb(MysqlDb::new().await), StateKind::Postgres).await;
}

/// Keys of text (unicode, quotes, a backslash) and of two columns pair with
/// their ledger entries by hash as integer keys do: an idle run reads no
/// row whole, a change reads that row alone.
#[tokio::test]
async fn text_and_composite_keys_pair_by_hash() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (region text, code text, qty int, PRIMARY KEY (region, code));
         CREATE TABLE dst (region text, code text, qty int, PRIMARY KEY (region, code));
         INSERT INTO src SELECT r, c || '-' || g, g FROM generate_series(1, 2000) g,
           unnest(ARRAY['Zürich', 'o''brien', 'back\\slash', '東京']) r, unnest(ARRAY['a', 'B']) c;",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "copy",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"src\"\nkey = [\"region\", \"code\"]\n\n\
             [detect]\nstrategy = \"diff\"\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"dst\"\nkey = [\"region\", \"code\"]\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
            url = db.url
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let run = |what: &str| {
        let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
        assert_eq!(code(&out), 0, "{what}: {}", stderr(&out));
        summary_run(&out, "copy")
    };
    run("first run");
    let idle = run("idle run");
    assert_eq!(
        (idle["scanned"].as_u64(), idle["read_whole"].as_u64()),
        (Some(16000), Some(0)),
        "{idle}"
    );
    db.exec(
        "UPDATE src SET qty = -1 WHERE region = '東京' AND code = 'a-7';
         DELETE FROM src WHERE region = 'o''brien' AND code = 'B-9';
         INSERT INTO src VALUES ('back\\slash', 'new', 1);",
    )
    .await;
    let changed = run("changes");
    let count = |f: &str| changed[f].as_u64();
    assert_eq!(
        (
            count("updates"),
            count("deletes"),
            count("inserts"),
            count("read_whole")
        ),
        (Some(1), Some(1), Some(1), Some(2)),
        "{changed}"
    );
    assert_eq!(
        db.difference("SELECT * FROM src", "SELECT * FROM dst")
            .await,
        0
    );
}

/// Values a type's own equality calls equal, but whose text differs, are
/// changes: the source's hash tells them apart. (`json` has no hash of its
/// own: it is hashed as text.)
#[tokio::test]
async fn changes_only_the_text_shows_are_seen() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE COLLATION loose (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE src (id int PRIMARY KEY, amount numeric, span interval, word text COLLATE loose, doc json, x float8);
         CREATE TABLE dst (id int PRIMARY KEY, amount numeric, span interval, word text, doc json, x float8);
         INSERT INTO src VALUES (1, 1.5, '1 day', 'word', '{\"a\": 1}', 0);",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "copy",
        &pg_job(
            &db.url,
            "src",
            "strategy = \"diff\"",
            "size = 100",
            &db.url,
            "dst",
        ),
    );
    let state = state_url(StateKind::Postgres, &cfg, &db);
    let updates = || {
        let out = cfg.ferry(Some(&state), &["--output", "json", "run", "--once"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        summary_run(&out, "copy")["updates"].as_u64()
    };
    updates();
    assert_eq!(updates(), Some(0), "an idle run");
    for change in [
        "amount = 1.50",
        "span = '24 hours'",
        "word = 'WORD'",
        "doc = '{\"a\": 2}'",
        "x = '-0'",
    ] {
        db.exec(&format!("UPDATE src SET {change} WHERE id = 1"))
            .await;
        assert_eq!(updates(), Some(1), "{change} is a change");
        assert_eq!(updates(), Some(0), "{change} is sent once");
    }
}

/// Range digests never hide a delete the guard refused: the next run
/// reads those buckets again and refuses again, until it is allowed.
#[tokio::test]
async fn a_refused_delete_is_refused_again() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id bigint PRIMARY KEY, v int); CREATE TABLE dst (id bigint PRIMARY KEY, v int);
         INSERT INTO src SELECT g, g FROM generate_series(1, 50000) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    let detect = "strategy = \"diff\"\nmax_delete_ratio = 0.1";
    cfg.job(
        "copy",
        &pg_job(&db.url, "src", detect, "size = 5000", &db.url, "dst"),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let run = |extra: &[&str]| {
        let mut args = vec!["--output", "json", "run", "--once"];
        args.extend_from_slice(extra);
        let out = cfg.ferry(Some(&state), &args);
        (code(&out), summary_run(&out, "copy"))
    };
    run(&[]);
    run(&[]);
    let (_, idle) = run(&[]);
    assert_eq!(
        idle["read_hashes"].as_u64(),
        Some(0),
        "digests recorded: {idle}"
    );
    db.exec("DELETE FROM src WHERE id <= 20000").await;
    for attempt in ["first", "second"] {
        let (exit, refused) = run(&[]);
        assert_eq!(exit, 1, "{attempt} run refuses to delete 40%: {refused}");
        assert_eq!(
            db.count("SELECT count(*) FROM dst").await,
            50000,
            "{attempt} run deleted nothing"
        );
    }
    let (exit, allowed) = run(&["--allow-mass-delete"]);
    assert_eq!(
        (exit, allowed["deletes"].as_u64()),
        (0, Some(20000)),
        "{allowed}"
    );
    assert_eq!(
        db.difference("SELECT * FROM src", "SELECT * FROM dst")
            .await,
        0
    );
}
