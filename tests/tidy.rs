//! Tidy checks, in the spirit of rust-analyzer's: properties of the repository itself that
//! would otherwise only fail on somebody else's machine.
//!
//! - Every external program that `src/`, `tests/` and `benches/` run (`Command::new(..)`, the
//!   commands of an `sh -c` script, a `require("..")` of the test harness, a `need ..` of a
//!   test's shell script) is installed by `.ci/run`: a program installed by hand on one machine
//!   and missing on a fresh one fails here, on the machine where it was introduced.
//! - The test run leaves the repository clean: nothing generated is tracked, the places tests
//!   and the README's commands write to are ignored, and `.ci/run` compares `git status` before
//!   and after the tests.

#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches start the real programs they measure"
)]
#![allow(clippy::unwrap_used)] // a panic is a test failure

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `Command::new(<expression>)` where the expression is not a string literal: what it runs.
/// A new such call must be added here, so that its program is checked too.
const PROGRAM_EXPRESSIONS: [(&str, Runs); 7] = [
    // The supervisor and the HAProxy-facing tests run the HAProxy binary they were given.
    ("&settings.bin", Runs::Program("haproxy")),
    ("&bin", Runs::Program("haproxy")),
    ("bin", Runs::Program("haproxy")),
    // The crate's own binary, built by cargo for the tests and benches.
    ("env!(\"CARGO_BIN_EXE_thalassa\")", Runs::OwnBinary),
    ("BIN", Runs::OwnBinary),
    ("settings.binary", Runs::OwnBinary),
    // The compose stack's driver: its `need` lines name what it runs (scanned below).
    ("STACK_SCRIPT", Runs::Script("tests/compose/stack.sh")),
];

/// Shell builtins: an `sh -c` script that uses them runs no program.
const SHELL_BUILTINS: [&str; 14] = [
    "command", "echo", "exec", "kill", "printf", "test", "[", "cd", "trap", "wait", "true",
    "false", "exit", "set",
];

#[derive(Clone, Copy, Debug)]
enum Runs {
    Program(&'static str),
    OwnBinary,
    Script(&'static str),
}

/// Where each external program is run from: program -> `file:line`s.
type Uses = BTreeMap<String, Vec<String>>;

#[test]
fn every_program_the_code_runs_is_installed_by_ci_run() {
    let uses = programs_run();
    // The scan itself must see the programs we know are run, or it is blind.
    for known in ["haproxy", "chromedriver", "schemathesis", "podman"] {
        assert!(
            uses.contains_key(known),
            "the scan missed {known}: {uses:#?}"
        );
    }
    for (program, places) in &uses {
        println!("{program}: {}", places.join(", "));
    }
    let ci = CiInstalls::read();
    let problems: Vec<String> = uses
        .iter()
        .filter_map(|(program, places)| {
            ci.check(program)
                .err()
                .map(|why| format!("{program} (run at {}): {why}", places.join(", ")))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "programs that .ci/run does not install:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_test_run_leaves_the_repository_clean() {
    let tracked = git(&["ls-files"]);
    for generated in [".schemathesis/", "data/", "target/"] {
        let offenders: Vec<&str> = tracked
            .lines()
            .filter(|path| path.starts_with(generated))
            .collect();
        assert!(
            offenders.is_empty(),
            "generated files are tracked: {offenders:?}"
        );
        let ignored = Command::new("git")
            .current_dir(ROOT)
            .args(["check-ignore", "-q", &format!("{generated}probe")])
            .status()
            .unwrap();
        assert!(ignored.success(), "{generated} is not in .gitignore");
    }
    let ci_run = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
    assert!(
        ci_run.contains("git status --porcelain"),
        ".ci/run must compare `git status --porcelain` before and after the tests"
    );
}

fn git(args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(ROOT)
        .args(args)
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// Every external program run by the code, with where it is run.
fn programs_run() -> Uses {
    let mut uses = Uses::new();
    for dir in ["src", "tests", "benches"] {
        for file in files_under(&Path::new(ROOT).join(dir)) {
            let relative = file.strip_prefix(ROOT).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file).unwrap();
            match file.extension().and_then(|e| e.to_str()) {
                Some("rs") => scan_rust(&relative, &text, &mut uses),
                Some("sh") => scan_script(&relative, &text, &mut uses),
                _ => {}
            }
        }
    }
    uses
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn add(uses: &mut Uses, program: &str, place: String) {
    uses.entry(program.to_owned()).or_default().push(place);
}

fn scan_rust(file: &str, text: &str, uses: &mut Uses) {
    // Matches are searched where comments and string contents are blanked (same offsets), so
    // a call in a comment or a string (like this file's own patterns) is not one.
    let code = mask_comments_and_strings(text);
    for (offset, _) in code.match_indices("Command::new(") {
        let place = format!("{file}:{}", line_of(text, offset));
        let start = offset + "Command::new(".len();
        let end = start + balanced_len(&code[start..]);
        let argument = &text[start..end];
        match string_literal(argument) {
            Some(shell) if shell == "sh" || shell == "bash" => {
                add(uses, &shell, place.clone());
                // The script: the first string literal after `"-c"` in the same statement.
                let statement_end = code[end..].find(';').map_or(text.len(), |at| end + at);
                let statement = &text[end..statement_end];
                let script = statement
                    .find("\"-c\"")
                    .and_then(|at| first_string_literal(&statement[at + 4..]));
                match script {
                    Some(script) => {
                        for program in script_commands(&script) {
                            add(uses, &program, place.clone());
                        }
                    }
                    None => panic!("{place}: a shell run without a literal `-c` script"),
                }
            }
            Some(program) => add(uses, &program, place),
            None => {
                let expression = argument.trim();
                let known = PROGRAM_EXPRESSIONS
                    .iter()
                    .find(|(text, _)| *text == expression)
                    .map(|(_, runs)| *runs)
                    .unwrap_or_else(|| {
                        panic!(
                            "{place}: Command::new({expression}) runs a program this check \
                             cannot name: add it to PROGRAM_EXPRESSIONS in tests/tidy.rs"
                        )
                    });
                match known {
                    Runs::Program(program) => add(uses, program, place),
                    Runs::OwnBinary => {}
                    Runs::Script(script) => add(uses, "bash", format!("{place} ({script})")),
                }
            }
        }
    }
    // The harness's `require("program", hint)`, its first argument a literal.
    for (offset, _) in code.match_indices("require(") {
        let start = offset + "require(".len();
        if code[start..].trim_start().starts_with('"') {
            let place = format!("{file}:{}", line_of(text, offset));
            if let Some(program) = first_string_literal(&text[start..]) {
                add(uses, &program, place);
            }
        }
    }
}

/// A test's shell script declares what it runs with `need PROGRAM "hint"`.
fn scan_script(file: &str, text: &str, uses: &mut Uses) {
    for (index, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [need, program, ..] = words.as_slice()
            && *need == "need"
            && !program.starts_with('"')
        {
            add(uses, program, format!("{file}:{}", index + 1));
        }
    }
}

/// `text` with comments and the contents of string and char literals blanked to spaces, byte
/// for byte (offsets and line numbers stay those of `text`); the quotes stay.
fn mask_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to.min(bytes.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
                blank(&mut out, i, end);
                i = end;
            }
            // r"..", r#".."#, br#".."#: no escapes, ends at a quote and as many hashes.
            b'r' if raw_string_start(bytes, i).is_some() => {
                let (hashes, open) = raw_string_start(bytes, i).unwrap_or((0, i));
                let closing = format!("\"{}", "#".repeat(hashes));
                let end = text[open + 1..]
                    .find(&closing)
                    .map_or(bytes.len(), |n| open + 1 + n);
                blank(&mut out, open + 1, end);
                i = end + closing.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            // A char literal ('"', '\'', 'x'), not a lifetime ('a).
            b'\'' => {
                let end = if bytes.get(i + 1) == Some(&b'\\') {
                    text[i + 3..].find('\'').map(|n| i + 3 + n)
                } else {
                    let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (bytes.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i + 1, end);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// At `i`, the start of a raw string (`r"`, `r#"`, `br#"`...; not the end of an identifier):
/// its number of hashes and the offset of its opening quote.
fn raw_string_start(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    let before = i.checked_sub(1).map(|p| bytes[p]);
    let ident_before = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ident_before && before != Some(b'b') {
        return None;
    }
    let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
    (bytes.get(i + 1 + hashes) == Some(&b'"')).then_some((hashes, i + 1 + hashes))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// The length of the text up to the `)` that closes the call whose `(` precedes it, in text
/// whose strings are blanked.
fn balanced_len(code: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in code.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return i,
            ')' | ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    code.len()
}

/// `"name"` (with nothing else) -> `name`.
fn string_literal(expression: &str) -> Option<String> {
    let inner = expression.trim().strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then(|| inner.to_owned())
}

/// The contents of the first string literal in `text`, escapes resolved.
fn first_string_literal(text: &str) -> Option<String> {
    let start = text.find('"')? + 1;
    let mut value = String::new();
    let mut chars = text[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return Some(value),
            _ => value.push(c),
        }
    }
    None
}

/// The programs a shell script runs: the first word of each pipeline stage and list element,
/// leaving out builtins and words the Rust side fills in (`{...}`) or the shell expands (`$`).
fn script_commands(script: &str) -> Vec<String> {
    script
        .split(['|', ';', '&', '\n'])
        .filter_map(|stage| stage.split_whitespace().next())
        .filter(|word| !word.contains(['{', '$', '"', '\'']))
        .filter(|word| !SHELL_BUILTINS.contains(word))
        .map(str::to_owned)
        .collect()
}

/// What `.ci/run` installs: Debian packages from its `for pkg in ...` list, and programs from
/// its `pip install NAME==VERSION` lines.
struct CiInstalls {
    packages: Vec<String>,
    pip: Vec<String>,
}

impl CiInstalls {
    fn read() -> CiInstalls {
        let text = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).unwrap();
        // A shell line continued with a backslash is one line.
        let joined = text.replace("\\\n", " ");
        let packages = joined
            .lines()
            .find_map(|line| line.trim().strip_prefix("for pkg in "))
            .and_then(|rest| rest.split(';').next())
            .expect(".ci/run has a `for pkg in ...; do` list of Debian packages")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let pip = text
            .lines()
            .filter(|line| line.contains("pip install"))
            .flat_map(|line| line.split_whitespace())
            .filter_map(|word| word.split_once("==").map(|(name, _)| name.to_owned()))
            .collect();
        CiInstalls { packages, pip }
    }

    /// Ok when a fresh Debian machine has `program` after `.ci/run`: its package is on the
    /// list or is part of every Debian system (Essential, or priority required), or `.ci/run`
    /// pip-installs it, or it is the Rust toolchain running this test.
    fn check(&self, program: &str) -> Result<(), String> {
        if program == "cargo" || self.pip.iter().any(|name| name == program) {
            return Ok(());
        }
        let found = support::programs_on_path(program);
        if found.is_empty() {
            return Err("not installed here; .ci/run must install it".to_owned());
        }
        // Any of them will do (a hand-installed one may come first on PATH).
        let mut owners = Vec::new();
        for path in &found {
            match debian_package_of(path) {
                Some(package)
                    if self.packages.contains(&package) || part_of_every_debian(&package) =>
                {
                    return Ok(());
                }
                Some(package) => owners.push(format!("{} from package {package}", path.display())),
                None => owners.push(format!("{} from no Debian package", path.display())),
            }
        }
        Err(format!(
            "{}: add its package to .ci/run's `for pkg in ...` list (or pip-install it there)",
            owners.join(", ")
        ))
    }
}

/// The Debian package owning `path` (tried as found on PATH and with symlinks resolved, and
/// in both the merged-/usr and the historical location).
fn debian_package_of(path: &Path) -> Option<String> {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut candidates = Vec::new();
    for p in [path.to_owned(), resolved] {
        let text = p.display().to_string();
        if let Some(rest) = text.strip_prefix("/usr") {
            candidates.push(rest.to_owned());
        } else {
            candidates.push(format!("/usr{text}"));
        }
        candidates.push(text);
    }
    candidates.iter().find_map(|candidate| {
        let output = Command::new("dpkg").args(["-S", candidate]).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        // `package[, package...]: /path`, and `diversion by PACKAGE from|to: /path` lines.
        let line = text
            .lines()
            .find(|l| !l.starts_with("diversion by ") && l.ends_with(&format!(": {candidate}")))?;
        let package = line.split(':').next()?.split(',').next()?.trim();
        Some(package.to_owned())
    })
}

fn part_of_every_debian(package: &str) -> bool {
    let Ok(output) = Command::new("dpkg-query")
        .args(["-W", "-f", "${Essential} ${Priority}", package])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    text.starts_with("yes ") || text.ends_with(" required")
}

#[test]
fn the_scanners_read_what_they_claim() {
    // Built at run time, so that this file's own scan does not see these calls.
    let sample = [
        "let a = {new}(\"sh\").args([\"-c\", \"echo hi | netcat-like - x && kill 1\"]);",
        "// {new}(\"commented\")",
        "let b = std::process::{new}(\"dd\").arg(\"x\");",
        "let c = {new}(env!(\"CARGO_BIN_EXE_thalassa\"));",
        "if {require}(\"chromium\", \"hint\") {}",
    ]
    .join("\n")
    .replace("{new}", "Command::new")
    .replace("{require}", "require");
    let mut uses = Uses::new();
    scan_rust("x.rs", &sample, &mut uses);
    let names: Vec<&str> = uses.keys().map(String::as_str).collect();
    assert_eq!(names, ["chromium", "dd", "netcat-like", "sh"]);
    assert_eq!(uses["netcat-like"], ["x.rs:1"]);
    let mut from_script = Uses::new();
    scan_script(
        "s.sh",
        "  need podman \"hint\"\nneed() { ...; }\n",
        &mut from_script,
    );
    assert_eq!(from_script.keys().collect::<Vec<_>>(), ["podman"]);
}
