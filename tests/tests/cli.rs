//! The command line, as a user meets it: bad flags get a clear error and
//! exit code 2, never a panic.
#![expect(
    clippy::expect_used,
    reason = "in a test, a failed expectation is a failed test"
)]

use std::process::Command;

use stallwatch_tests::agent_bin;

fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(agent_bin())
        .args(args)
        .output()
        .expect("running the agent");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (args, expect) in [
        (&["run", "--listen", "not-an-address"][..], "--listen"),
        (&["run", "--probes", "runqueue,telepathy"][..], "telepathy"),
        (&["run", "--max-cgroups", "0"][..], "--max-cgroups"),
        (
            &["run", "--cgroup-rescan-interval", "soon"][..],
            "--cgroup-rescan-interval",
        ),
        (
            &["run", "--tcp-rtt-interval", "often"][..],
            "--tcp-rtt-interval",
        ),
        (&["run", "--max-tcp-sockets", "10"][..], "--max-tcp-sockets"),
        (&["run", "--no-such-flag"][..], "--no-such-flag"),
        (&["run", "--cri-timeout", "soon"][..], "--cri-timeout"),
        (&["run", "--cri-sandboxes", "keep"][..], "--cri-sandboxes"),
        (
            &["run", "--runqueue-source", "sundial"][..],
            "--runqueue-source",
        ),
        (&["fly"][..], "fly"),
    ] {
        let (code, text) = agent(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains(expect),
            "{args:?} should name {expect}: {text}"
        );
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

#[test]
fn every_flag_has_an_environment_variable() {
    let (code, help) = agent(&["run", "--help"]);
    assert_eq!(code, 0, "{help}");
    for flag in [
        "--listen",
        "--cgroup-root",
        "--tracefs",
        "--probes",
        "--max-tasks",
        "--runqueue-source",
        "--max-cgroups",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let flags = help.matches("\n  -").count() + help.matches("\n      --").count();
    let envs = help.matches("[env: STALLWATCH_").count();
    // Every flag but --help has one.
    assert_eq!(envs + 1, flags, "{help}");
}

#[test]
fn an_invalid_env_value_is_refused_like_a_flag() {
    let out = Command::new(agent_bin())
        .arg("run")
        .env("STALLWATCH_LISTEN", "nowhere")
        .output()
        .expect("running the agent");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
