//! The container image's recipe (`Dockerfile`, `.dockerignore`), checked without a
//! container engine: hadolint finds nothing in it; the builder stage builds with exactly
//! the command that CI runs (`.ci/run` → `scripts/test`), so CI proves that the image's
//! build works with the lock file; the builder's toolchain is Cargo.toml's rust-version
//! on the runtime image's Debian release; the runtime image holds only the binary and
//! runs it as a numeric non-root user; and the build context that `.dockerignore` leaves
//! holds everything the Dockerfile copies and the build reads, and nothing bulky.

use std::path::{Path, PathBuf};
use std::process::Command;

// The test binary's parts live beside it in tests/image/.
#[path = "image/context.rs"]
mod context;
#[path = "image/dockerfile.rs"]
mod dockerfile;

use context::DockerIgnore;
use dockerfile::{Dockerfile, Stage};

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&read("Dockerfile"))
}

/// A string value of Cargo.toml's `[package]` table (one `key = "value"` line).
fn package_value(key: &str) -> String {
    let manifest = read("Cargo.toml");
    let package = manifest
        .split("\n[")
        .find(|table| table.starts_with("[package]") || table.starts_with("package]"))
        .expect("a [package] table");
    package
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in [package]"))
}

/// hadolint's findings on `file` at its default threshold (every level fails);
/// `None` when it finds nothing.
fn hadolint(file: &Path) -> Option<String> {
    let output = Command::new("hadolint")
        .arg("--no-color")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("hadolint: {e}: run scripts/install-test-deps"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success() || !text.trim().is_empty()).then_some(text)
}

#[test]
fn hadolint_finds_nothing() {
    // hadolint really checks: a floating base image and a `cd` in RUN are findings.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "FROM rust\nRUN cd /src && make\n").unwrap();
    let findings = hadolint(bad.path()).expect("hadolint passes a bad Dockerfile");
    assert!(
        findings.contains("DL3006") && findings.contains("DL3003"),
        "{findings}"
    );
    if let Some(findings) = hadolint(&repo("Dockerfile")) {
        panic!("hadolint on Dockerfile:\n{findings}");
    }
}

/// The builder's `cargo build …`, words joined by single spaces.
fn builder_build_command(builder: &Stage) -> String {
    let builds: Vec<String> = builder
        .all("RUN")
        .flat_map(|run| run.commands())
        .filter(|words| words.len() >= 2 && words[0] == "cargo" && words[1] == "build")
        .map(|words| words.join(" "))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "one cargo build in the builder: {builds:?}"
    );
    builds.into_iter().next().unwrap()
}

#[test]
fn the_builder_runs_the_build_that_ci_runs() {
    let file = dockerfile();
    let command = builder_build_command(file.stage("builder"));
    for part in ["--release", "--locked", "--bin sluice"] {
        assert!(command.contains(part), "{command:?} lacks {part}");
    }
    // CI runs scripts/test, which runs the very same command before the tests.
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == "scripts/test"),
        ".ci/run no longer runs scripts/test:\n{ci}"
    );
    let script = read("scripts/test");
    let lines: Vec<&str> = script.lines().map(str::trim).collect();
    let build = lines.iter().position(|line| *line == command);
    let tests = lines.iter().position(|line| line.starts_with("cargo test"));
    match (build, tests) {
        (Some(build), Some(tests)) => assert!(
            build < tests,
            "scripts/test builds the image's binary after the tests"
        ),
        _ => panic!("scripts/test does not run {command:?} (verbatim) before cargo test"),
    }
}

#[test]
fn the_builder_is_the_msrv_toolchain_on_the_runtime_debian() {
    let file = dockerfile();
    let builder = &file.stage("builder").image;
    let tag = builder
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is not the rust image: {builder}"));
    let tag = tag.split('@').next().unwrap();
    let (version, variant) = tag.split_once('-').expect("a rust:VERSION-VARIANT tag");
    let msrv = package_value("rust-version");
    let msrv: Vec<&str> = msrv.split('.').collect();
    let version: Vec<&str> = version.split('.').collect();
    assert!(
        version.starts_with(&msrv) && version.len() <= msrv.len() + 1,
        "the builder's Rust {version:?} is not Cargo.toml's rust-version {msrv:?}"
    );
    // The binary links against the builder's glibc: it must be the runtime's Debian.
    let runtime = &file.runtime().image;
    let debian = [("bookworm", "debian12"), ("trixie", "debian13")];
    let (codename, release) = debian
        .iter()
        .find(|(codename, _)| variant.ends_with(codename))
        .unwrap_or_else(|| panic!("the builder's Debian is unknown: {builder}"));
    assert!(
        runtime.contains(&format!("-{release}")),
        "builder on {codename}, runtime {runtime} is not {release}"
    );
}

#[test]
fn the_runtime_runs_only_the_binary_as_a_numeric_non_root_user() {
    let file = dockerfile();
    let runtime = file.runtime();
    assert!(
        runtime.image.starts_with("gcr.io/distroless/cc-debian")
            && runtime.image.ends_with(":nonroot"),
        "{}",
        runtime.image
    );
    let user = runtime.last("USER").expect("a USER in the runtime stage");
    let ids: Vec<u32> = user
        .args
        .split(':')
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("USER {}: not numeric", user.args))
        })
        .collect();
    assert!(
        ids.iter().all(|&id| id != 0) && ids.len() == 2,
        "USER {}",
        user.args
    );
    let entrypoint = runtime.last("ENTRYPOINT").and_then(|e| e.exec_form());
    assert_eq!(entrypoint, Some(vec!["sluice".to_string()]));

    // One file from the builder, the binary it built, into a directory on the PATH of
    // the distroless image; nothing from the context, nothing run.
    let copies: Vec<_> = runtime
        .instructions
        .iter()
        .filter(|i| matches!(i.keyword.as_str(), "COPY" | "ADD" | "RUN"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:#?}");
    assert_eq!(
        (copies[0].keyword.as_str(), copies[0].flag("from")),
        ("COPY", Some("builder"))
    );
    let words = copies[0].words();
    assert_eq!(words.len(), 2, "one source: {words:?}");
    assert_eq!(words[1], "/usr/local/bin/sluice");
    assert!(
        builder_outputs(file.stage("builder")).contains(&words[0]),
        "{} is not where the builder put target/release/sluice",
        words[0]
    );

    let ports: Vec<String> = runtime.all("EXPOSE").flat_map(|e| e.words()).collect();
    assert_eq!(ports, ["2525", "2587", "2465", "9090"]);
}

/// Where the builder copies (`cp`) or strips (`strip … -o`) `target/release/sluice` to.
fn builder_outputs(builder: &Stage) -> Vec<String> {
    let mut out = Vec::new();
    for words in builder.all("RUN").flat_map(|run| run.commands()) {
        if !words.iter().any(|w| w == "target/release/sluice") {
            continue;
        }
        match words[0].as_str() {
            "cp" => out.push(words.last().unwrap().clone()),
            "strip" => {
                let o = words.iter().position(|w| w == "-o").expect("strip -o");
                out.push(words[o + 1].clone());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_image_is_labelled_with_the_package() {
    let file = dockerfile();
    let runtime = file.runtime();
    let labels: std::collections::HashMap<String, String> = runtime
        .all("LABEL")
        .flat_map(|l| l.words())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let args: std::collections::HashMap<String, String> = runtime
        .all("ARG")
        .map(|a| {
            let (k, v) = a.args.split_once('=').unwrap_or((&a.args, ""));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect();
    let label = |key: &str| {
        labels
            .get(&format!("org.opencontainers.image.{key}"))
            .cloned()
    };
    assert_eq!(label("title").as_deref(), Some("sluice"));
    assert_eq!(label("description"), Some(package_value("description")));
    assert_eq!(label("licenses"), Some(package_value("license")));
    assert!(label("source").is_some_and(|s| s.starts_with("https://")));
    for (key, arg) in [
        ("version", "VERSION"),
        ("revision", "REVISION"),
        ("created", "CREATED"),
    ] {
        assert_eq!(label(key), Some(format!("${{{arg}}}")), "{key}");
        assert!(args.contains_key(arg), "no ARG {arg} in the runtime stage");
    }
    assert_eq!(
        args["VERSION"],
        package_value("version"),
        "ARG VERSION's default"
    );
}

/// Every `include_str!`/`include_bytes!` path in the sources, resolved from the file
/// that names it and made relative to the repository.
fn included_files() -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for macro_ in ["include_str!(\"", "include_bytes!(\""] {
                for rest in text.split(macro_).skip(1) {
                    let target = rest.split('"').next().unwrap();
                    let resolved = path.parent().unwrap().join(target);
                    let resolved = resolved.canonicalize().unwrap_or(resolved);
                    let relative = resolved.strip_prefix(repo("")).unwrap_or(&resolved);
                    out.push(relative.to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

#[test]
fn the_build_context_holds_what_the_build_reads_and_nothing_bulky() {
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    for path in [
        "target",
        "target/release/sluice",
        "fuzz/target",
        ".git",
        "var",
    ] {
        assert!(ignore.excludes(path), ".dockerignore lets {path} in");
    }
    let files = context::files(&repo(""), &ignore);
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(repo(f)).unwrap().len())
        .sum();
    println!("build context: {} files, {bytes} bytes", files.len());
    assert!(bytes < 10 << 20, "a {bytes}-byte context");

    // What the builder copies (sources relative to the context) is there.
    let file = dockerfile();
    let builder = file.stage("builder");
    let mut copied = Vec::new();
    for copy in builder.all("COPY").filter(|c| c.flag("from").is_none()) {
        let words = copy.words();
        for source in &words[..words.len() - 1] {
            let source = source.trim_start_matches("./").trim_end_matches('/');
            let present = files
                .iter()
                .any(|f| f == source || f.starts_with(&format!("{source}/")));
            assert!(
                present,
                "COPY {source} (line {}): not in the build context",
                copy.line
            );
            copied.push(source.to_string());
        }
    }
    for included in included_files() {
        assert!(
            copied
                .iter()
                .any(|c| included == *c || included.starts_with(&format!("{c}/"))),
            "the sources include {included}, which the builder does not copy"
        );
    }

    // And that is enough for cargo: the manifest's targets resolve (no [[bench]] or
    // [[example]] whose file stays out) and the lock file is current, with only the
    // copied files present.
    let dir = tempfile::tempdir().unwrap();
    for f in files.iter().filter(|f| {
        copied
            .iter()
            .any(|c| *f == c || f.starts_with(&format!("{c}/")))
    }) {
        let to = dir.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo(f), to).unwrap();
    }
    // `cargo fetch` parses every target of the manifest (`cargo metadata` does not).
    let host = rustc_host();
    let cargo_in_copy = |args: &[&str]| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(args)
            .args(["--locked", "--offline"])
            .current_dir(dir.path())
            .output()
            .expect("run cargo");
        assert!(
            output.status.success(),
            "cargo {args:?} on the copied files:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    cargo_in_copy(&["fetch", "--target", &host]);
    let stdout = cargo_in_copy(&[
        "metadata",
        "--format-version",
        "1",
        "--filter-platform",
        &host,
    ]);
    let metadata: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let sluice = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sluice")
        .expect("the sluice package");
    assert!(
        sluice["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "sluice" && t["kind"][0] == "bin"),
        "no sluice binary among {}",
        sluice["targets"]
    );
}

fn rustc_host() -> String {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(String::from))
        .expect("rustc -vV names the host")
}
