//! README.md's "A one-minute tour", run as written: every command of the section goes
//! through `sh` against a fresh daemon, in order, with the real `warren` first on `PATH`, and
//! its stdout must be exactly the lines the README shows under it. The tour drifted from the
//! CLI once (issue 7, item 17: its dead-letter block consumed from an empty queue); this keeps
//! it honest.
//!
//! The convention (also in an HTML comment in the section, for whoever edits it): in each
//! ```` ```sh ```` block of the section, a line starting with `$ ` is a command (a trailing `\`
//! continues it on the next line); the lines under it, up to the next command, a blank line
//! or the end of the block, are its stdout; lines starting with `#` are comments. Any other
//! line fails the test, so a block written another way cannot be skipped silently. A command
//! must exit 0 with nothing on stderr. RFC 3339 timestamps (`dlq peek`'s DIED AT) compare
//! equal whatever their value.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestDaemon;

const README: &str = include_str!("../README.md");
const TOUR_HEADING: &str = "## A one-minute tour";

/// Fewer commands than this means the section or the convention changed under the test.
const MIN_COMMANDS: usize = 15;

/// Bound on one tour command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One `$` command of the tour and the stdout the README promises for it.
#[derive(Debug, PartialEq)]
struct Step {
    /// The command as `sh -c` gets it, continuation lines joined.
    command: String,
    /// The expected stdout lines.
    output: Vec<String>,
    /// 1-based README line of the `$`, for failure messages.
    line: usize,
}

/// The text of the section headed `heading`, up to the next `## ` heading; with the
/// 1-based README line number it starts on.
fn section<'a>(readme: &'a str, heading: &str) -> (&'a str, usize) {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no '{heading}' section"))
        + 1;
    let rest = &readme[start..];
    let end = rest[heading.len()..]
        .find("\n## ")
        .map_or(rest.len(), |i| i + heading.len() + 1);
    let first_line = readme[..start].lines().count() + 1;
    (&rest[..end], first_line)
}

/// The steps of every ```` ```sh ```` block in `text`, whose first line is README line
/// `first_line`. Panics, naming the README line, on a line the convention does not allow.
fn steps(text: &str, first_line: usize) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    // Whether lines may still be output of the last command (no blank line since).
    let mut open = false;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + first_line, l));
    while let Some((no, line)) = lines.next() {
        if !in_block {
            in_block = line.trim_end() == "```sh";
            open = false;
            continue;
        }
        if line.trim_end() == "```" {
            in_block = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            let mut command = command.to_owned();
            while command.ends_with('\\') {
                command.pop();
                let (_, next) = lines
                    .next()
                    .unwrap_or_else(|| panic!("README.md:{no}: '\\' continues past the end"));
                command.push_str(next.trim_start());
            }
            steps.push(Step {
                command,
                output: Vec::new(),
                line: no,
            });
            open = true;
        } else if line.trim().is_empty() {
            open = false;
        } else if line.starts_with('#') {
        } else if open {
            if let Some(step) = steps.last_mut() {
                step.output.push(line.to_owned());
            }
        } else {
            panic!(
                "README.md:{no}: {line:?} is neither a `$ ` command, output right under one, \
                 nor a `#` comment (see tests/readme_tour.rs)"
            );
        }
    }
    assert!(
        !in_block,
        "README.md: a ```sh block in the tour is not closed"
    );
    steps
}

/// `s` with every RFC 3339 UTC timestamp (`2026-11-30T19:04:53.467Z`) replaced by `<time>`,
/// and trailing spaces removed from each line (editors strip them from the README).
fn normalise(s: &str) -> String {
    s.lines()
        .map(|line| format!("{}\n", mask_times(line).trim_end()))
        .collect()
}

fn mask_times(line: &str) -> String {
    // The shape of a timestamp's first 19 characters: d = ASCII digit, others literal.
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut copied = 0;
    while i + SHAPE.len() <= b.len() {
        let fits = SHAPE.iter().zip(&b[i..]).all(|(s, c)| match s {
            b'd' => c.is_ascii_digit(),
            s => s == c,
        });
        if !fits {
            i += 1;
            continue;
        }
        let mut end = i + SHAPE.len();
        if b.get(end) == Some(&b'.') {
            end += 1;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
        }
        if b.get(end) == Some(&b'Z') {
            end += 1;
        }
        out.push_str(&line[copied..i]);
        out.push_str("<time>");
        copied = end;
        i = end;
    }
    out.push_str(&line[copied..]);
    out
}

/// Runs `command` with `sh -c` in `cwd`, `warren` first on `PATH` and `WARREN_SERVER` set to
/// the daemon; returns (success, stdout, stderr).
fn run(d: &TestDaemon, cwd: &std::path::Path, command: &str) -> (bool, String, String) {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_warren"))
        .parent()
        .expect("the binary has a directory");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env("PATH", path)
        .env("WARREN_SERVER", d.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning sh");
    // Read both pipes on threads so a long output cannot block the child.
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (status.success(), stdout, stderr)
}

#[test]
fn the_readme_tour_runs_as_written_on_a_fresh_daemon() {
    let (text, first_line) = section(README, TOUR_HEADING);
    let steps = steps(text, first_line);
    assert!(
        steps.len() >= MIN_COMMANDS,
        "found only {} `$ ` commands in the tour: {steps:#?}",
        steps.len()
    );
    let d = TestDaemon::start();
    let cwd = tempfile::tempdir().expect("temp dir");
    for step in &steps {
        let (success, stdout, stderr) = run(&d, cwd.path(), &step.command);
        assert!(
            success && stderr.is_empty(),
            "README.md:{}: `{}` failed (success: {success})\nstdout:\n{stdout}stderr:\n{stderr}",
            step.line,
            step.command
        );
        let want: String = step.output.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(
            normalise(&stdout),
            normalise(&want),
            "README.md:{}: `{}` printed (left) something else than the README shows \
             (right); its real output:\n{stdout}",
            step.line,
            step.command
        );
    }
}

#[test]
fn commands_their_output_continuations_and_comments_are_told_apart() {
    let text = "intro\n```sh\n# set up\n$ warren a \\\n    --b\nout 1\nout 2\n$ warren c\n\n\
                $ warren d # note\n```\n```rust\n$ not a command\n```\n";
    assert_eq!(
        steps(text, 10),
        [
            Step {
                command: "warren a --b".into(),
                output: vec!["out 1".into(), "out 2".into()],
                line: 13,
            },
            Step {
                command: "warren c".into(),
                output: vec![],
                line: 17,
            },
            Step {
                command: "warren d # note".into(),
                output: vec![],
                line: 19,
            },
        ]
    );
}

#[test]
#[should_panic(expected = "README.md:12")]
fn a_line_that_is_no_command_output_or_comment_fails() {
    steps("```sh\n$ warren a\n\nwarren b\n```\n", 9);
}

#[test]
fn timestamps_compare_equal_and_nothing_else_is_masked() {
    assert_eq!(
        normalise("  0  rejected  2026-11-30T19:04:53.467Z  15 B  x  \n"),
        "  0  rejected  <time>  15 B  x\n"
    );
    assert_eq!(
        mask_times("a 2026-01-02T03:04:05Z b 1999-12-31T23:59:59.5Z"),
        "a <time> b <time>"
    );
    assert_eq!(mask_times("2026-11-30 19:04"), "2026-11-30 19:04");
}
