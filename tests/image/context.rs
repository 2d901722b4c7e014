//! The build context that `docker build .` sends: the files under the repository that
//! `.dockerignore` leaves in. The patterns follow Docker's rules in a simplified form
//! (moby's patternmatcher, without character classes `[…]` and `\` escapes, which the
//! parser refuses): blank lines and `#` comments skipped; paths relative to the context
//! root (a leading `/` and a trailing `/` dropped); `*` matches within one path segment,
//! `?` one character of it, `**` any number of segments; a pattern that matches a
//! directory covers everything under it; a leading `!` re-includes; the last pattern
//! that matches a path decides.

use std::path::Path;

pub struct DockerIgnore {
    /// (excludes, pattern segments), in file order.
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> DockerIgnore {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                assert!(
                    !line.contains(['[', '\\']),
                    "{line:?}: character classes and escapes are not supported here"
                );
                let (excludes, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (false, rest.trim()),
                    None => (true, line),
                };
                let segments = pattern
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(String::from)
                    .collect();
                (excludes, segments)
            })
            .collect();
        DockerIgnore { patterns }
    }

    /// Whether `path` ('/'-separated, relative to the context root) stays out.
    pub fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (excludes, pattern) in &self.patterns {
            // The path or one of its parent directories.
            if (1..=segments.len()).any(|n| matches(pattern, &segments[..n])) {
                excluded = *excludes;
            }
        }
        excluded
    }

    /// Whether an exception could bring back something under the excluded directory
    /// `dir`: if not, the walk need not enter it (target/ holds gigabytes).
    fn may_reinclude_under(&self, dir: &str) -> bool {
        let segments: Vec<&str> = dir.split('/').collect();
        self.patterns.iter().any(|(excludes, pattern)| {
            !excludes
                && (pattern.iter().any(|s| s == "**")
                    || (pattern.len() > segments.len()
                        && matches(&pattern[..segments.len()], &segments)))
        })
    }
}

fn matches(pattern: &[String], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            matches(&pattern[1..], path) || (!path.is_empty() && matches(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => {
            segment_matches(p.as_bytes(), s.as_bytes()) && matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], text)
                || (!text.is_empty() && segment_matches(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) => p == t && segment_matches(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Every file of the context, '/'-separated and relative to `root`, sorted.
pub fn files(root: &Path, ignore: &DockerIgnore) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, "", ignore, &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, prefix: &str, ignore: &DockerIgnore, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("reading the context") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if !ignore.excludes(&path) || ignore.may_reinclude_under(&path) {
                walk(&entry.path(), &format!("{path}/"), ignore, out);
            }
        } else if !ignore.excludes(&path) {
            out.push(path);
        }
    }
}

#[test]
fn patterns_follow_dockers_rules() {
    let ignore =
        DockerIgnore::parse("# comment\n\n*\n!src/\nsrc/**/*.bak\n!/Cargo.toml\n**/secret?.pem\n");
    for (path, excluded) in [
        ("target", true),
        ("target/release/sluice", true),
        (".git", true),
        ("Cargo.toml", false),
        ("Cargo.lock", true),
        ("src/main.rs", false),
        ("src/a/b/old.bak", true),
        ("src/old.bak", true),
        ("src/secret1.pem", true),
        ("src/secret12.pem", false),
    ] {
        assert_eq!(ignore.excludes(path), excluded, "{path}");
    }
    let deep = DockerIgnore::parse("*\n!src/main.rs\n");
    assert!(deep.may_reinclude_under("src") && !deep.may_reinclude_under("target"));
    assert!(!deep.excludes("src/main.rs") && deep.excludes("src/lib.rs"));
}
