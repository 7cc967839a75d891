//! `agent top` against a running agent, as an engineer on the node uses it:
//! `--once --output json` for scripts, and the live view typed into a real
//! terminal (tmux), with a throttled container that must stand out.
#![expect(
    clippy::expect_used,
    reason = "in a test, a failed expectation is a failed test"
)]

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use stallwatch_tests::{Agent, ContainerCgroup, Workload, agent_bin, privileged};

/// A container limited to a tenth of a core that tries to use a whole one:
/// throttled in nearly every period.
fn throttled_container(name: &str) -> (ContainerCgroup, Workload) {
    let container = ContainerCgroup::create(name);
    container.limit_cpu(10_000, 100_000);
    let hog = Workload::in_cgroups(&container.procs_files(), "while :; do :; done");
    (container, hog)
}

fn top(agent: &Agent, args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(["top", "--url", &format!("http://127.0.0.1:{}", agent.port)])
        .args(args)
        .output()
        .expect("running agent top")
}

/// `agent top --once --output json --sort throttled` until the container is
/// listed with its rates (it is known after the agent's next rescan).
fn once_json_with(agent: &Agent, cgroup: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = top(
            agent,
            &[
                "--once",
                "--output",
                "json",
                "--interval",
                "1s",
                "--sort",
                "throttled",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "agent top failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_str(&text).expect("top's JSON");
        let listed = doc["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["cgroup"] == cgroup && c["throttled_percent"].is_number());
        if listed || Instant::now() > deadline {
            return doc;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn once_as_json_puts_the_throttled_container_first_with_its_numbers() {
    if !privileged("agent top --once") {
        return;
    }
    let agent = Agent::start(&[]);
    let (container, hog) = throttled_container("top-json");
    let doc = once_json_with(&agent, &container.label);
    drop(hog);

    let rows = doc["containers"].as_array().expect("a container list");
    let row = rows
        .iter()
        .find(|c| c["cgroup"] == container.label.as_str())
        .unwrap_or_else(|| panic!("{} is not listed: {doc:#}", container.label));
    eprintln!("{row:#}");
    assert_eq!(
        rows[0]["cgroup"], container.label,
        "sorted by throttling, the throttled container comes first"
    );
    assert_eq!(row["container_id"], container.container_id.as_str());
    let number = |key: &str| {
        row[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {row:#}"))
    };
    assert!(number("throttled_percent") > 50.0);
    assert_eq!(number("cpu_limit_cores"), 0.1);
    let cores = number("cpu_cores");
    assert!(
        (0.05..=0.15).contains(&cores),
        "{cores} cores under a 0.1 limit"
    );
    // Throttled tasks wait runnable: the run queue shows it, in the tens of ms.
    assert!(number("runqueue_p99_seconds") > 0.01);
    assert!(doc["interval_seconds"].as_f64().is_some_and(|s| s > 0.5));
    assert!(
        doc["agent"]["probes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["up"] == true),
        "{:#}",
        doc["agent"]
    );
}

#[test]
fn once_as_text_is_a_table_with_a_heading() {
    if !privileged("agent top --once") {
        return;
    }
    let agent = Agent::start(&[]);
    let out = top(&agent, &["--once", "--interval", "500ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("stallwatch top: http://127.0.0.1:"),
        "{text}"
    );
    assert!(lines[1].starts_with("probes: runqueue up"), "{text}");
    assert!(
        lines[2].starts_with("NAME") && lines[2].contains("THR%"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with('/')),
        "the root cgroup:\n{text}"
    );
}

/// A tmux server of this test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Self {
        let tmux = Self {
            socket: format!("stallwatch-test-{}", std::process::id()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "/bin/sh",
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running tmux (cargo xtask setup installs it): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "0"])
    }

    /// The screen once `ready` holds for it, or a panic showing it.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited for {what}; the screen:\n{screen}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The CPU column of the row whose name contains `id`: the field after the
/// name (`pod <uid>/<id>`), once the second reading has given it a value.
fn cpu_of(line: &str, id: &str) -> Option<f64> {
    let mut fields = line.split_whitespace();
    fields.find(|f| f.contains(id))?;
    fields.next()?.parse().ok()
}

/// The table's lines: below its heading (the line starting with NAME),
/// above the key help on the last line.
fn table_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NAME"))
        .skip(1)
        .take_while(|l| !l.starts_with("q quit"))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn the_live_view_sorts_by_throttling_on_keys_and_q_restores_the_terminal() {
    if !privileged("agent top in tmux") {
        return;
    }
    let agent = Agent::start(&[]);
    let (container, hog) = throttled_container("top-tui");
    // How the row names it: the pod uid's and the container id's first characters.
    let id_prefix: String = container.container_id.chars().take(12).collect();
    let tmux = Tmux::start(200, 40);
    tmux.keys(&[
        &format!(
            "{} top --url http://127.0.0.1:{} --interval 1s; echo top-exited-$?",
            agent_bin().display(),
            agent.port
        ),
        "Enter",
    ]);
    let screen = tmux.wait_for("the container's row with its CPU rate", |s| {
        s.lines().any(|l| cpu_of(l, &id_prefix).is_some())
    });
    assert!(screen.contains("stallwatch top"), "{screen}");
    assert!(screen.contains("CPU▼"), "sorted by CPU at first:\n{screen}");

    // CPU → LIMIT → THR%.
    tmux.keys(&["Right", "Right"]);
    let screen = tmux.wait_for("THR% as the sort key", |s| s.contains("THR%▼"));
    let rows = table_rows(&screen);
    assert!(
        rows.first().is_some_and(|r| r.contains(&id_prefix)),
        "the throttled container is first when sorted by THR%:\n{screen}"
    );

    // The filter narrows the table to the container.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &id_prefix]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the filter", |s| {
        s.contains(&format!("filter: {id_prefix}"))
    });
    assert_eq!(table_rows(&screen).len(), 1, "{screen}");

    // A narrow terminal drops the least important columns, not the row.
    tmux.run(&["resize-window", "-t", "0", "-x", "60"]);
    let screen = tmux.wait_for("the narrow table", |s| {
        s.lines()
            .any(|l| l.starts_with("NAME") && !l.contains("CONN p99"))
    });
    assert!(screen.contains("THR%"), "{screen}");
    assert!(
        table_rows(&screen).iter().all(|l| l.chars().count() <= 60),
        "{screen}"
    );

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("top to exit", |s| s.contains("top-exited-0"));
    assert!(
        !screen.contains("THR%"),
        "the alternate screen is gone after q:\n{screen}"
    );
    // Raw mode is off again: the shell's terminal echoes and reads lines.
    tmux.keys(&[
        "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo",
        "Enter",
    ]);
    tmux.wait_for("stty's modes", |s| s.contains("icanon echo"));
    drop(hog);
}

#[test]
fn the_live_view_says_when_the_agent_cannot_be_reached_and_keeps_trying() {
    if !privileged("agent top in tmux") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    drop(listener);
    let tmux = Tmux::start(160, 20);
    tmux.keys(&[
        &format!(
            "{} top --url {url} --interval 250ms; echo top-exited-$?",
            agent_bin().display()
        ),
        "Enter",
    ]);
    let screen = tmux.wait_for("the error on screen", |s| {
        s.contains("cannot reach the agent")
    });
    assert!(screen.contains("retrying every 250ms"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("top to exit", |s| s.contains("top-exited-0"));
}

#[test]
fn standalone_loads_the_probes_itself_and_needs_root_for_it() {
    if !privileged("agent top --standalone") {
        return;
    }
    let out = Command::new(agent_bin())
        .args(["top", "--standalone", "--once", "--interval", "500ms"])
        .output()
        .expect("running agent top");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("probes in this process (--standalone)"),
        "{text}"
    );
    assert!(
        text.contains("probes: runqueue up, reclaim up, disk up, tcp up"),
        "{text}"
    );

    // As nobody, without capabilities: said plainly, not a panic.
    let out = Command::new(agent_bin())
        .args(["top", "--standalone", "--once"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("running agent top as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs root, or the capabilities CAP_BPF and CAP_PERFMON"),
        "{stderr}"
    );
}

#[test]
fn an_agent_that_is_not_there_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    drop(listener);
    let out = Command::new(agent_bin())
        .args(["top", "--once", "--interval", "100ms", "--url", &url])
        .output()
        .expect("running agent top");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the agent") && stderr.contains(&url),
        "{stderr}"
    );
}

#[test]
fn the_live_view_without_a_terminal_says_to_use_once() {
    let out = Command::new(agent_bin())
        .args(["top", "--url", "http://127.0.0.1:1"])
        .output()
        .expect("running agent top");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--once"), "{stderr}");
}
