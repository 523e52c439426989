//! Developer commands, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`).

mod js_wit_version;
mod plugins;
mod sdk_plugins;
mod simulate;
mod wit_docs;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  plugins          build plugins/ for wasm32-wasip2 and install the components:
                   the examples in target/plugins/, all of them (with the
                   test-only ones) in target/test-plugins/; and the Python
                   and JS examples (chat_py, chat_js) with componentize-py
                   and componentize-js (needs python3 and npm)
  serve [args...]  `plugins`, then run the server on target/plugins/;
                   args go to `switchyard serve`
  test [args...]   `plugins`, then fmt, clippy and the tests of both
                   workspaces; args go to `cargo test --workspace`
  wit-docs         write the WIT reference (docs/wit/) from wit/
  simulate [opts]  drive the stations example of a running server with
                   random swaps, charges, faults and restocks
                   (`cargo xtask simulate --help`)
";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let result = match command.as_deref() {
        Some("plugins") if rest.is_empty() => plugins::install(&repo_root()),
        Some("serve") => serve(&repo_root(), &rest),
        Some("test") => test(&repo_root(), &rest),
        Some("simulate") => simulate::run(&rest),
        Some("wit-docs") if rest.is_empty() => wit_docs::write(&repo_root()),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("plugins") => {
            eprint!("`plugins` takes no arguments\n\n{USAGE}");
            return ExitCode::from(2);
        }
        Some(other) => {
            eprint!("unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: the parent of this crate's directory, as `cargo run`
/// names it (so a binary built in another checkout sharing the target
/// directory still serves this one), else as it was when compiled.
fn repo_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("xtask/ lies inside the repository")
        .to_path_buf()
}

/// The cargo that runs this xtask (so the same toolchain), or `cargo`.
fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo xtask serve`: install the plugins, then run the server on them.
fn serve(root: &Path, args: &[String]) -> Result<()> {
    plugins::install(root)?;
    let mut server = cargo();
    server
        .current_dir(root)
        .args(["run", "--package", "switchyard", "--", "serve", "--plugins"])
        .arg(plugins::example_dir(root))
        .args(args);
    println!("xtask: cargo run --package switchyard -- serve");
    exec(server)
}

/// Replaces this process with `command`, so that signals (Ctrl-C) reach the
/// server directly and its exit status is ours.
#[cfg(unix)]
fn exec(mut command: Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let err = command.exec();
    Err(err).context("cannot start cargo")
}

/// Runs `command` and exits with its status.
#[cfg(not(unix))]
fn exec(mut command: Command) -> Result<()> {
    let status = command.status().context("cannot start cargo")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `cargo xtask test`: everything CI checks, stopping at the first failure.
fn test(root: &Path, args: &[String]) -> Result<()> {
    plugins::install(root)?;
    browser_packages(root)?;

    let mut fmt = cargo();
    fmt.current_dir(root).args(["fmt", "--all", "--check"]);
    let mut clippy = cargo();
    clippy.current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let mut tests = cargo();
    tests
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .env("SWITCHYARD_TEST_PLUGINS", plugins::test_dir(root));

    let steps = [
        ("cargo fmt --all --check", fmt),
        (
            "cargo fmt --check (plugins/)",
            plugins::cargo(root, &["fmt", "--check"]),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            clippy,
        ),
        (
            "cargo clippy --release -- -D warnings (plugins/)",
            plugins::cargo(root, &["clippy", "--release", "--", "-D", "warnings"]),
        ),
        (
            // The SDK's unit tests run natively (wasm32 has no test runner).
            "cargo test -p switchyard-sdk --target <host> (plugins/)",
            plugins::cargo(
                root,
                &["test", "-p", "switchyard-sdk", "--target", &host_triple()?],
            ),
        ),
    ];
    for (name, mut command) in steps {
        println!("xtask: {name}");
        run(&mut command).with_context(|| format!("step `{name}` failed"))?;
    }
    println!("xtask: cargo test --workspace");
    let totals = run_tests(&mut tests).context("step `cargo test --workspace` failed")?;
    println!("xtask: all steps passed");
    // One plain closing line with the totals of every test binary.
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    Ok(())
}

/// The target triple of the machine (`rustc -vV`'s `host:` line).
fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot run `rustc -vV`")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` printed no `host:` line")
}

/// `npm ci` in `tests/browser/` (playwright-core, pinned by its
/// package-lock.json) for the browser test, when `node_modules` is missing
/// or older than the lock file.
fn browser_packages(root: &Path) -> Result<()> {
    let dir = root.join("tests").join("browser");
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
    let locked = modified(&dir.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
        return Ok(());
    }
    println!("xtask: npm ci (tests/browser/)");
    let mut npm = Command::new("npm");
    npm.current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"]);
    run(&mut npm).context(
        "`npm ci` in tests/browser/ failed: the browser test needs node and npm \
         (Debian: apt-get install nodejs npm) and the npm registry",
    )
}

/// Totals over every `test result:` line cargo test printed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Add the counts of one `test result: ok. 3 passed; 0 failed; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Runs cargo test, passing its output through and adding up the results.
fn run_tests(command: &mut Command) -> Result<Totals> {
    use std::io::{BufRead as _, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        println!("tests: {} passed, {} failed", totals.passed, totals.failed);
        bail!("cargo test exited with {status}");
    }
    Ok(totals)
}

/// Runs `command` to completion; an error unless it succeeds.
fn run(command: &mut Command) -> Result<()> {
    let program = Path::new(command.get_program()).file_name().map_or_else(
        || "command".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let status = command
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("{program} exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_add_up_result_lines() {
        let mut totals = Totals::default();
        totals.add_line("test result: ok. 20 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.35s");
        totals.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        totals.add_line("running 5 tests");
        assert_eq!(
            totals,
            Totals {
                passed: 23,
                failed: 2
            }
        );
    }
}
