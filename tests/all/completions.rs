//! `berth completions SHELL` and `berth man`, through the real binary.

use std::process::Command;

fn berth(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("berth runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn completions_name_every_subcommand_and_bash_parses_them() {
    let (ok, script) = berth(&["completions", "bash"]);
    assert!(ok);
    for sub in ["serve", "deploy", "logs", "scale", "completions"] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &script).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(file.path())
        .status()
        .unwrap();
    assert!(check.success(), "bash -n refuses the script");
    for shell in ["zsh", "fish"] {
        let (ok, script) = berth(&["completions", shell]);
        assert!(ok && script.contains("deploy"), "{shell}");
    }
    let (ok, _) = berth(&["completions", "tcsh-of-the-future"]);
    assert!(!ok, "an unknown shell is refused");
}

#[test]
fn the_man_page_is_roff_with_the_subcommands() {
    let (ok, page) = berth(&["man"]);
    assert!(ok);
    assert!(
        page.starts_with(".ie") || page.contains(".TH berth"),
        "{page}"
    );
    assert!(page.contains("completions"), "{page}");
}
