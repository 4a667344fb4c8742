//! Golden types: edge values of the PostgreSQL types users sync, through
//! every SQL target (tables made by `create = true`) and through the JSON
//! envelope, each arriving as docs/types.md says it does.
mod common;

use common::*;

const GOLDEN: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE golden (
    id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(38,10), f8 double precision,
    b boolean, t text, ch char(5), d date, ts timestamp(6), tstz timestamptz(6), tm time(6),
    iv interval, u uuid, j json, jb jsonb, raw bytea, arr int[], mood mood, ip inet);
INSERT INTO golden VALUES
 (1, -32768, -9223372036854775808, -9999999999999999999999999999.9999999999, 1e-300,
  true, E'tab\there \u0001 emoji 🦀', 'ab', '0001-01-01', '2024-03-31 02:30:00.000001',
  '2024-10-27 00:59:59.999999+00', '00:00:00', '1 day 02:03:04.5',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": {"b": [1, "ž"]}}',
  '{"n": 123456789012345678901234567890, "z": null}', '\x00ff00', '{1,NULL,3}', 'happy', '10.1.2.3/8'),
 (2, 32767, 9223372036854775807, 9999999999999999999999999999.9999999999, '-0',
  false, '', '', '9999-12-31', '1970-01-01 00:00:00', '2024-03-31 01:00:00.5+00',
  '23:59:59.999999', '-3 mons', '00000000-0000-0000-0000-000000000000', '[]', '{}',
  '\x', '{}', 'sad', '::1'),
 (3, 0, 0, 0.0000000001, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  'null', 'null', NULL, '{NULL}', NULL, NULL),
 (4, NULL, NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL);"#;

const COLUMNS: [&str; 19] = [
    "i2", "i8", "num", "f8", "b", "t", "ch", "d", "ts", "tstz", "tm", "iv", "u", "j", "jb", "raw",
    "arr", "mood", "ip",
];

fn job(source_url: &str, kind: &str, target: &str, extra: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{source_url}\"\ntable = \"golden\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\n\n{target_section}\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n{extra}",
        target_section = match kind {
            "file" => format!("[target]\ntype = \"file\"\npath = \"{target}\"\nformat = \"jsonl\""),
            _ => format!(
                "[target]\ntype = \"{kind}\"\nurl = \"{target}\"\ntable = \"dst\"\nkey = [\"id\"]\ncreate = true"
            ),
        }
    )
}

/// PostgreSQL → PostgreSQL: every value of every column is the source's,
/// but for the documented ones.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_target_gets_every_value_exactly() {
    let db = TestDb::new().await;
    db.exec(GOLDEN).await;
    let cfg = ConfigDir::new();
    cfg.job("golden", &job(&db.url, "postgres", &db.url, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    // (column, id, what arrives): a json's text is sent compactly, and a
    // JSON null inside json/jsonb is SQL NULL in the target.
    let documented = [
        ("j", 1, Some(r#"{"a":{"b":[1,"ž"]}}"#)),
        ("j", 3, None),
        ("jb", 3, None),
    ];
    for column in COLUMNS {
        for id in 1..=4 {
            let read = |table: &str| {
                format!("SELECT coalesce({column}::text, '<NULL>') FROM {table} WHERE id = {id}")
            };
            let source = db.strings(&read("golden")).await;
            let target = db.strings(&read("dst")).await;
            let expected = match documented.iter().find(|(c, i, _)| *c == column && *i == id) {
                Some((_, _, value)) => vec![value.unwrap_or("<NULL>").to_string()],
                None => source,
            };
            assert_eq!(target, expected, "column {column}, id {id}");
        }
    }
    // The declared types were kept.
    assert_eq!(
        db.strings("SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'dst'::regclass AND attnum > 0").await,
        db.strings("SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'golden'::regclass AND attnum > 0").await,
    );
    assert_eq!(changed(&cfg.run_once_ok(&state), "golden"), 0);
}

/// The envelope's `data` is the source's row as PostgreSQL renders it in
/// JSON, value for value.
#[tokio::test(flavor = "multi_thread")]
async fn the_envelope_carries_the_documented_form_of_each_type() {
    let db = TestDb::new().await;
    db.exec(GOLDEN).await;
    let cfg = ConfigDir::new();
    let out_dir = cfg.path().join("out");
    cfg.job(
        "golden",
        &job(&db.url, "file", &out_dir.display().to_string(), ""),
    );
    cfg.run_once_ok(&state_url(StateKind::Sqlite, &cfg, &db));
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&out_dir).expect("output folder") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("output file");
        lines.extend(text.lines().map(str::to_string));
    }
    assert_eq!(lines.len(), 4);
    let expected = db
        .strings("SELECT row_to_json(g)::text FROM golden g ORDER BY id")
        .await;
    for line in lines {
        let item: serde_json::Value = serde_json::from_str(&line).expect("envelope");
        let id = item["data"]["id"].as_i64().expect("id") as usize;
        let want: serde_json::Value = serde_json::from_str(&expected[id - 1]).expect("row");
        assert_eq!(item["data"], want, "row {id}");
    }
    // Spot checks of the documented forms.
    let row1: serde_json::Value = serde_json::from_str(&expected[0]).unwrap();
    assert_eq!(row1["raw"], "\\x00ff00");
    assert_eq!(
        row1["num"].to_string(),
        "-9999999999999999999999999999.9999999999"
    );
    assert_eq!(row1["i8"].to_string(), "-9223372036854775808");
    assert_eq!(
        row1["jb"]["n"].to_string(),
        "123456789012345678901234567890"
    );
    assert_eq!(row1["arr"], serde_json::json!([1, null, 3]));
}

/// What arrives in MariaDB and SQLite, per column, rows by id (`<NULL>`:
/// SQL NULL); docs/types.md's table says the same.
const SHARED: [(&str, [&str; 2]); 14] = [
    ("i2", ["-32768", "32767"]),
    ("i8", ["-9223372036854775808", "9223372036854775807"]),
    (
        "num",
        [
            "-9999999999999999999999999999.9999999999",
            "9999999999999999999999999999.9999999999",
        ],
    ),
    ("b", ["1", "0"]),
    ("t", ["tab\there \u{1} emoji 🦀", ""]),
    ("d", ["0001-01-01", "9999-12-31"]),
    ("iv", ["1 day 02:03:04.5", "-3 mons"]),
    (
        "u",
        [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "00000000-0000-0000-0000-000000000000",
        ],
    ),
    ("j", [r#"{"a":{"b":[1,"ž"]}}"#, "[]"]),
    (
        "jb",
        [r#"{"n":123456789012345678901234567890,"z":null}"#, "{}"],
    ),
    ("raw", ["00FF00", ""]),
    ("arr", ["[1,null,3]", "[]"]),
    ("mood", ["happy", "sad"]),
    ("ip", ["10.1.2.3/8", "::1"]),
];

const MARIADB: [(&str, [&str; 2]); 5] = [
    ("f8", ["1e-300", "0"]),
    ("ch", ["ab", ""]),
    (
        "ts",
        ["2024-03-31 02:30:00.000001", "1970-01-01 00:00:00.000000"],
    ),
    (
        "tstz",
        ["2024-10-27 00:59:59.999999", "2024-03-31 01:00:00.500000"],
    ),
    ("tm", ["00:00:00.000000", "23:59:59.999999"]),
];

const SQLITE: [(&str, [&str; 2]); 5] = [
    ("f8", ["1.0e-300", "0.0"]),
    ("ch", ["ab   ", "     "]),
    ("ts", ["2024-03-31T02:30:00.000001", "1970-01-01T00:00:00"]),
    (
        "tstz",
        [
            "2024-10-27T00:59:59.999999+00:00",
            "2024-03-31T01:00:00.5+00:00",
        ],
    ),
    ("tm", ["00:00:00", "23:59:59.999999"]),
];

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_and_sqlite_targets_get_the_documented_values() {
    for kind in [Target::Mysql, Target::Sqlite] {
        let db = TestDb::new().await;
        db.exec(GOLDEN).await;
        let cfg = ConfigDir::new();
        let target = TargetDb::new(kind, &cfg, &db).await;
        cfg.job("golden", &job(&db.url, kind.kind(), &target.url(), ""));
        let state = state_url(StateKind::Sqlite, &cfg, &db);
        let out = cfg.ferry(Some(&state), &["run", "--once"]);
        let read = |column: &str| {
            match kind {
            Target::Mysql => format!(
                "SELECT CAST(COALESCE(CASE WHEN '{column}' = 'raw' THEN HEX(raw) ELSE {column} END, '<NULL>') AS CHAR) FROM dst ORDER BY id"
            ),
            _ => format!(
                "SELECT CAST(COALESCE(CASE WHEN typeof({column}) = 'blob' THEN hex({column}) ELSE {column} END, '<NULL>') AS TEXT) FROM dst ORDER BY id"
            ),
        }
        };
        let own = match kind {
            Target::Mysql => MARIADB,
            _ => SQLITE,
        };
        for (column, values) in SHARED.iter().chain(own.iter()) {
            let got = target.strings(&read(column)).await;
            assert_eq!(&got[..2], &values[..], "{kind:?}: column {column}");
        }
        match kind {
            // MariaDB has no NaN or infinity: those rows are refused, loudly.
            Target::Mysql => {
                assert_eq!(code(&out), 1, "{}", stderr(&out));
                assert_eq!(
                    target
                        .strings("SELECT CAST(count(*) AS CHAR) FROM dst")
                        .await,
                    ["2"]
                );
                let dead = dead_items(&cfg, &state, "golden");
                assert!(dead.contains("Incorrect double value"), "{dead}");
            }
            // SQLite keeps them as the text the envelope carries.
            _ => {
                assert_eq!(code(&out), 0, "{}", stderr(&out));
                let f8 = target.strings(&read("f8")).await;
                assert_eq!(&f8[2..], ["Infinity", "NaN"]);
                assert_eq!(target.strings(&read("arr")).await[2], "[null]");
                assert_eq!(changed(&cfg.run_once_ok(&state), "golden"), 0);
            }
        }
    }
}

/// MariaDB's types, edge values included, into PostgreSQL (`create = true`).
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_source_values_arrive_in_postgresql_as_documented() {
    let my = MysqlDb::new().await;
    my.exec(
        "CREATE TABLE golden (id int PRIMARY KEY, ti tinyint, u bigint unsigned, i8 bigint,
           d decimal(65,30), f double, flag tinyint(1), vc varchar(10), c char(4), t text,
           bl blob, dt datetime(6), da date, tm time(6), j json, e enum('a','b'));
         INSERT INTO golden VALUES
          (1, -128, 18446744073709551615, -9223372036854775808,
           -99999999999999999999999999999999999.999999999999999999999999999999, 1e-300, 1,
           'ž✓', 'ab', 'x\ty', 0x00ff00, '1000-01-01 00:00:00.000001', '9999-12-31',
           '23:59:59.999999', '{\"a\": [1, null], \"n\": 123456789012345678901234567890}', 'b'),
          (2, NULL, 0, NULL, 0.000000000000000000000000000001, -1.5, 0, '', '', '', '', NULL,
           NULL, NULL, NULL, NULL);",
    )
    .await;
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job(
        "golden",
        &format!(
            "[source]\ntype = \"mysql\"\nurl = \"{}\"\ntable = \"golden\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"dst\"\nkey = [\"id\"]\ncreate = true\n\n\
             [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n",
            my.url, db.url
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    let expected = [
        ("ti", ["-128", "<NULL>"]),
        ("u", ["18446744073709551615", "0"]),
        ("i8", ["-9223372036854775808", "<NULL>"]),
        (
            "d",
            [
                "-99999999999999999999999999999999999.999999999999999999999999999999",
                "0.000000000000000000000000000001",
            ],
        ),
        ("f", ["1e-300", "-1.5"]),
        ("flag", ["true", "false"]),
        ("vc", ["ž✓", ""]),
        ("c", ["ab", ""]),
        ("t", ["x\ty", ""]),
        ("bl", ["\\x00ff00", "\\x"]),
        ("dt", ["1000-01-01 00:00:00.000001", "<NULL>"]),
        ("da", ["9999-12-31", "<NULL>"]),
        ("tm", ["23:59:59.999999", "<NULL>"]),
        (
            "j",
            [
                r#"{"a": [1, null], "n": 123456789012345678901234567890}"#,
                "<NULL>",
            ],
        ),
        ("e", ["b", "<NULL>"]),
    ];
    assert_eq!(
        db.strings("SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'dst'::regclass AND attnum > 0").await,
        ["integer,smallint,numeric(20,0),bigint,numeric(65,30),double precision,boolean,character varying(10),character(4),text,bytea,timestamp(6) without time zone,date,time(6) without time zone,jsonb,text"]
    );
    for (column, values) in expected {
        let got = db
            .strings(&format!(
                "SELECT coalesce({column}::text, '<NULL>') FROM dst ORDER BY id"
            ))
            .await;
        assert_eq!(got, values, "column {column}");
    }
    assert_eq!(changed(&cfg.run_once_ok(&state), "golden"), 0);
}
