//! A new user's first mistakes are caught and explained: logs without colour
//! codes in a file, URLs that show everything but the password, a typo in a
//! field named with the line that defines it.
mod common;

use common::*;

fn job(source_url: &str, target_url: &str, fields: &str) -> String {
    format!(
        "[source]\ntype = \"postgres\"\nurl = \"{source_url}\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"diff\"\n\n\
         [target]\ntype = \"postgres\"\nurl = \"{target_url}\"\ntable = \"dst\"\nkey = [\"id\"]\n\n\
         {fields}\n[rules]\nowner = \"source\"\ndeletes = \"propagate\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_into_a_file_or_pipe_carry_no_colour_codes() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE src (id int PRIMARY KEY, v text); CREATE TABLE dst (id int PRIMARY KEY, v text);
             INSERT INTO src VALUES (1, 'a');")
        .await;
    let cfg = ConfigDir::new();
    // `create = true` on an existing table logs nothing; a new column under
    // `add` logs a WARN line: some log output is sure to come.
    cfg.job(
        "j",
        &format!(
            "{}\n[schema]\non_new_column = \"add\"\n",
            job(&db.url, &db.url, "")
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.run_once_ok(&state);
    db.exec("ALTER TABLE src ADD COLUMN w text").await;
    let out = cfg.run_once_ok(&state);
    let err = stderr(&out);
    assert!(err.contains("WARN"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in redirected logs: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_show_host_port_database_and_user_but_never_the_password() {
    let cfg = ConfigDir::new();
    cfg.job(
        "j",
        &job("x", "postgres://nc:s3cret@127.0.0.1:1/nc_dst", ""),
    );
    let out = cfg.ferry(None, &["check"]);
    assert_eq!(code(&out), 78);
    assert!(
        stderr(&out).contains("url `x` must start with"),
        "{}",
        stderr(&out)
    );

    let db = TestDb::new().await;
    cfg.job(
        "j",
        &job("postgres://nc:s3cret@127.0.0.1:1/nc_src", &db.url, ""),
    );
    let out = cfg.ferry(
        Some(&state_url(StateKind::Sqlite, &cfg, &db)),
        &["run", "--once"],
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("postgres://nc:***@127.0.0.1:1/nc_src"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typo_in_a_field_is_named_with_its_line_before_anything_is_written() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE src (id int PRIMARY KEY, name text); CREATE TABLE dst (id int PRIMARY KEY, name text);
             INSERT INTO src VALUES (1, 'a');")
        .await;
    let cfg = ConfigDir::new();
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    // A target field that the table does not have, then a source column
    // that does not exist: each stops the run (78), naming the field's line.
    cfg.job(
        "j",
        &job(&db.url, &db.url, "[fields]\nid = \"id\"\nnmae = \"name\"\n"),
    );
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("target column `nmae` at jobs/j.toml:18 is missing"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("ferry_t."), "{}", stderr(&out));
    cfg.job(
        "j",
        &job(&db.url, &db.url, "[fields]\nid = \"id\"\nname = \"nmae\"\n"),
    );
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("source column `nmae` (mapped to `name` at jobs/j.toml:18)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_jobs_work_with_a_job_variable_unset() {
    let db = TestDb::new().await;
    let cfg = ConfigDir::new();
    cfg.job("j", &job("${FERRY_TEST_UNSET_SHOP_URL}", &db.url, ""));
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let jobs = cfg
        .command(Some(&state), &["jobs"])
        .env_remove("FERRY_TEST_UNSET_SHOP_URL")
        .output()
        .expect("jobs");
    assert_eq!(code(&jobs), 0, "{}", stderr(&jobs));
    let text = String::from_utf8_lossy(&jobs.stdout).to_string();
    assert!(text.contains("${FERRY_TEST_UNSET_SHOP_URL}"), "{text}");
    let status = cfg
        .command(Some(&state), &["status"])
        .env_remove("FERRY_TEST_UNSET_SHOP_URL")
        .output()
        .expect("status");
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    // Commands that contact the systems still need it, and say where.
    let check = cfg
        .command(Some(&state), &["check"])
        .env_remove("FERRY_TEST_UNSET_SHOP_URL")
        .output()
        .expect("check");
    assert_eq!(code(&check), 78);
    assert!(
        stderr(&check).contains(
            "jobs/j.toml:3:7: environment variable `FERRY_TEST_UNSET_SHOP_URL` is not set"
        ),
        "{}",
        stderr(&check)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_warns_when_a_cursor_job_claims_to_carry_deletes() {
    let cfg = ConfigDir::new();
    let cursor = "[source]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\ntable = \"src\"\nkey = [\"id\"]\n\n\
         [detect]\nstrategy = \"cursor\"\ncursor = \"updated_at\"\n\n\
         [target]\ntype = \"postgres\"\nurl = \"postgres://u@h/db2\"\ntable = \"dst\"\nkey = [\"id\"]\n\n\
         [rules]\nowner = \"source\"\ndeletes = \"propagate\"\n";
    cfg.job("c", cursor);
    let out = cfg.ferry(None, &["check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("jobs/c.toml:19:11: warning: `strategy = \"cursor\"` never sees a row deleted at the source"),
        "{}",
        stderr(&out)
    );
    cfg.job(
        "c",
        &cursor.replace("deletes = \"propagate\"", "deletes = \"ignore\""),
    );
    let out = cfg.ferry(None, &["check"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_rules_rewrite_the_rows_written_under_the_old_ones() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id int PRIMARY KEY, name text, note text);
         CREATE TABLE dst (id int PRIMARY KEY, name text, note text);
         INSERT INTO src SELECT g, 'n' || g, 'source note' FROM generate_series(1, 20) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let fields = |owner: &str| {
        format!("[fields]\nid = \"id\"\nname = \"name\"\nnote = {{ from = \"note\", owner = \"{owner}\" }}\n")
    };
    cfg.job("j", &job(&db.url, &db.url, &fields("target")));
    cfg.run_once_ok(&state);
    // The CRM edits its notes; the job leaves them alone (owner = "target").
    db.exec("UPDATE dst SET note = 'crm note'").await;
    assert_eq!(changed(&cfg.run_once_ok(&state), "j"), 0);

    // The operator decides the shop owns notes after all.
    cfg.job("j", &job(&db.url, &db.url, &fields("source")));
    let plan = cfg.ferry(Some(&state), &["plan"]);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(text.contains("would write every row again"), "{text}");
    let out = cfg.run_once_ok(&state);
    assert_eq!(changed(&out, "j"), 20);
    assert_eq!(summary_run(&out, "j")["rewrite"], true);
    assert!(
        stderr(&out).contains("fields or rules changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        db.count("SELECT count(*) FROM dst WHERE note = 'source note'")
            .await,
        20
    );
    // Recorded: the next run compares with the new rules.
    assert_eq!(changed(&cfg.run_once_ok(&state), "j"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_names_the_first_keys_of_each_change() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id int PRIMARY KEY, name text, note text);
         CREATE TABLE dst (id int PRIMARY KEY, name text, note text);
         INSERT INTO src SELECT g, 'n' || g, '' FROM generate_series(1, 10) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    cfg.job("j", &job(&db.url, &db.url, ""));
    cfg.run_once_ok(&state);
    db.exec(
        "INSERT INTO src SELECT g, 'n' || g, '' FROM generate_series(11, 22) g;
         UPDATE src SET name = 'changed' WHERE id IN (3, 4);
         DELETE FROM src WHERE id = 5;",
    )
    .await;
    let plan = cfg.ferry(Some(&state), &["plan", "--limit", "3"]);
    assert_eq!(code(&plan), 0, "{}", stderr(&plan));
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        text.contains("  insert [11] [12] [13] … and 9 more"),
        "{text}"
    );
    assert!(text.contains("  update [3] [4]\n"), "{text}");
    // The target's row is read: the plan names what an update changes.
    assert!(
        text.contains("    [3]: name: \"n3\" → \"changed\"\n"),
        "{text}"
    );
    assert!(text.contains("  delete [5]\n"), "{text}");
    let json = cfg.ferry(Some(&state), &["plan", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("plan json");
    let keys = &json["plans"][0]["keys"];
    assert_eq!(keys["inserts"].as_array().unwrap().len(), 10);
    assert_eq!(keys["updates"], serde_json::json!(["[3]", "[4]"]));
    assert_eq!(keys["deletes"], serde_json::json!(["[5]"]));
    assert_eq!(
        json["plans"][0]["update_fields"]["[4]"],
        serde_json::json!([{"field": "name", "now": "n4", "after": "changed"}])
    );
    // Nothing was written.
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_counts_objects_not_attempts() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE customers (id int PRIMARY KEY, name text);
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int);
         CREATE TABLE crm_customers (id serial PRIMARY KEY, name text);
         CREATE TABLE crm_orders (id int PRIMARY KEY, customer_id int);
         INSERT INTO customers VALUES (1, 'Ada');
         INSERT INTO orders SELECT g, 1 FROM generate_series(1, 40) g;",
    )
    .await;
    let cfg = ConfigDir::new();
    let (url, target) = (&db.url, &db.url);
    cfg.job(
        "customers",
        &format!(
            "[source]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"customers\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{target}\"\ntable = \"crm_customers\"\nkey = [\"id\"]\n\n\
             [fields]\nname = \"name\"\n\n[rules]\nowner = \"source\"\n"
        ),
    );
    // Every order waits for its customer, whose job has not run: each task
    // is tried three times within this run, 1 ms apart, then goes dead.
    cfg.job(
        "orders",
        &format!(
            "after = [\"customers\"]\n\n\
             [source]\ntype = \"postgres\"\nurl = \"{url}\"\ntable = \"orders\"\nkey = [\"id\"]\n\n\
             [detect]\nstrategy = \"diff\"\n\n\
             [batch]\nsize = 4\nmax_attempts = 3\nbackoff = {{ initial = \"1ms\", max = \"1ms\" }}\n\n\
             [target]\ntype = \"postgres\"\nurl = \"{target}\"\ntable = \"crm_orders\"\nkey = [\"id\"]\n\n\
             [fields]\nid = \"id\"\ncustomer_id = {{ from = \"customer_id\", lookup = \"customers\" }}\n\n\
             [rules]\nowner = \"source\"\n"
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.ferry(Some(&state), &["run", "--once", "orders"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        failed(&out, "orders"),
        40,
        "40 objects failed, each after 3 attempts: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_row_names_the_field_and_where_the_job_defines_it() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE src (id int PRIMARY KEY, email text);
         CREATE TABLE dst (id int PRIMARY KEY, mail text NOT NULL);
         INSERT INTO src VALUES (1, 'a@example.com'), (2, NULL);",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job(
        "j",
        &job(
            &db.url,
            &db.url,
            "[fields]\nid = \"id\"\nmail = \"email\"\n",
        ),
    );
    let state = state_url(StateKind::Sqlite, &cfg, &db);
    let out = cfg.ferry(Some(&state), &["run", "--once"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    let line = "mail = \"email\"";
    let at = std::fs::read_to_string(cfg.path().join("jobs/j.toml"))
        .expect("job file")
        .lines()
        .position(|l| l == line)
        .expect("the field's line")
        + 1;
    assert!(
        err.contains(&format!("(field `mail`, jobs/j.toml:{at})")),
        "{err}"
    );
    assert!(!err.contains("ferry_t."), "{err}");
    assert_eq!(db.count("SELECT count(*) FROM dst").await, 1);
}

/// The README's first job file, word for word, with its `${VAR}`s set.
fn readme_example() -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Job files")
        .nth(1)
        .expect("the README has a Job files section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block in Job files");
    block.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_example_as_written_carries_deletes() {
    let shop = TestDb::new().await;
    let crm = TestDb::new().await;
    shop.exec(
        "CREATE TABLE customers (id int PRIMARY KEY, email text, phone text, notes text);
         INSERT INTO customers SELECT g, 'c' || g || '@example.com', '+420 ' || g, NULL FROM generate_series(1, 50) g;",
    )
    .await;
    crm.exec(
        "CREATE TABLE contacts (shop_id int PRIMARY KEY, email text, phone text, notes text);",
    )
    .await;
    let cfg = ConfigDir::new();
    cfg.job("customers_to_crm", &readme_example());
    let state = state_url(StateKind::Sqlite, &cfg, &shop);
    let run = |cfg: &ConfigDir| {
        let out = cfg
            .command(Some(&state), &["run", "--once"])
            .env("SHOP_DB_URL", &shop.url)
            .env("CRM_DB_URL", &crm.url)
            .output()
            .expect("run ferry");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
        out
    };
    assert_eq!(synced(&run(&cfg), "customers_to_crm"), 50);
    assert_eq!(crm.count("SELECT count(*) FROM contacts").await, 50);

    shop.exec("DELETE FROM customers WHERE id IN (7, 8, 9)")
        .await;
    assert_eq!(synced(&run(&cfg), "customers_to_crm"), 3);
    assert_eq!(crm.count("SELECT count(*) FROM contacts").await, 47);
    assert_eq!(
        crm.count("SELECT count(*) FROM contacts WHERE shop_id IN (7, 8, 9)")
            .await,
        0,
        "the deleted customers are deleted in the CRM"
    );
}
