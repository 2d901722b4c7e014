//! A Dockerfile read the way BuildKit's front end reads it, as far as the image tests
//! need: parser directives and comments dropped, `\` line continuations joined,
//! instructions grouped into stages by FROM, flags (`--from=…`, `--mount=…`) apart from
//! the arguments, exec (JSON) form told from shell form, and shell commands split at
//! `&&`, `||`, `;` and `|` into words. A changed escape character (`# escape=`) and
//! heredocs are refused rather than misread.

/// One instruction, its continuation lines joined.
#[derive(Debug)]
pub struct Instruction {
    /// Upper case: `RUN`, `COPY`, …
    pub keyword: String,
    /// The leading `--name=value` flags.
    pub flags: Vec<String>,
    /// What follows the flags.
    pub args: String,
    /// The line where the instruction starts (1-based), for messages.
    pub line: usize,
}

/// A build stage: from its FROM up to the next.
#[derive(Debug)]
pub struct Stage {
    /// The base image reference, e.g. `rust:1.95.0-slim-bookworm`.
    pub image: String,
    /// The name after `AS`.
    pub name: Option<String>,
    /// Everything after the FROM.
    pub instructions: Vec<Instruction>,
}

#[derive(Debug)]
pub struct Dockerfile {
    /// ARGs before the first FROM.
    pub global: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn parse(text: &str) -> Dockerfile {
        let mut global = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for instruction in logical_lines(text).into_iter().map(instruction) {
            if instruction.keyword == "FROM" {
                stages.push(from(&instruction));
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(instruction);
            } else {
                assert_eq!(
                    instruction.keyword, "ARG",
                    "line {}: only ARG may come before the first FROM",
                    instruction.line
                );
                global.push(instruction);
            }
        }
        Dockerfile { global, stages }
    }

    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }

    /// The last stage: what `docker build` without `--target` makes the image of.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("a Dockerfile has a FROM")
    }
}

impl Stage {
    pub fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }

    /// The instruction of this kind that takes effect (the last), if any.
    pub fn last<'a>(&'a self, keyword: &'a str) -> Option<&'a Instruction> {
        self.all(keyword).last()
    }
}

impl Instruction {
    /// `--name=value` → `Some(value)`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        let prefix = format!("--{name}=");
        self.flags.iter().find_map(|f| f.strip_prefix(&prefix))
    }

    /// The exec form's words (`["sluice"]`); `None` for shell form.
    pub fn exec_form(&self) -> Option<Vec<String>> {
        self.args
            .starts_with('[')
            .then(|| serde_json::from_str(&self.args))
            .and_then(Result::ok)
    }

    /// The arguments as words, quotes removed (COPY sources, LABEL pairs, EXPOSE ports).
    pub fn words(&self) -> Vec<String> {
        let commands = shell_commands(&self.args);
        assert_eq!(
            commands.len(),
            1,
            "line {}: not one list of words",
            self.line
        );
        commands.into_iter().next().unwrap()
    }

    /// A shell-form RUN's commands, each as its words.
    pub fn commands(&self) -> Vec<Vec<String>> {
        assert!(self.exec_form().is_none(), "line {}: exec form", self.line);
        shell_commands(&self.args)
    }
}

/// (first line number, text) of each instruction, continuations joined as the front end
/// joins them: the backslash and the newline removed, the next line's text appended.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        assert!(
            !trimmed.to_ascii_lowercase().starts_with("# escape="),
            "a changed escape character is not supported"
        );
        // Comments go, also between continuation lines; so do empty lines.
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (line, mut text) = pending.take().unwrap_or((index + 1, String::new()));
        let body = raw.trim_end();
        match body.strip_suffix('\\') {
            Some(head) => {
                text.push_str(head);
                pending = Some((line, text));
            }
            None => {
                text.push_str(body);
                assert!(
                    !text.contains("<<"),
                    "line {line}: heredocs are not supported"
                );
                out.push((line, text.trim().to_string()));
            }
        }
    }
    assert!(pending.is_none(), "the file ends in a line continuation");
    out
}

fn instruction((line, text): (usize, String)) -> Instruction {
    let (keyword, mut rest) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
    let mut flags = Vec::new();
    rest = rest.trim_start();
    while rest.starts_with("--") {
        let (flag, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        flags.push(flag.to_string());
        rest = after.trim_start();
    }
    Instruction {
        keyword: keyword.to_ascii_uppercase(),
        flags,
        args: rest.to_string(),
        line,
    }
}

fn from(instruction: &Instruction) -> Stage {
    let words = instruction.words();
    let (image, name) = match words.as_slice() {
        [image] => (image.clone(), None),
        [image, as_, name] if as_.eq_ignore_ascii_case("as") => (image.clone(), Some(name.clone())),
        other => panic!("line {}: FROM {other:?}", instruction.line),
    };
    Stage {
        image,
        name,
        instructions: Vec::new(),
    }
}

/// Splits shell text into commands at `&&`, `||`, `;` and `|` (outside quotes), each
/// command into words with single and double quotes removed.
pub fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    let end_word = |word: &mut Option<String>, commands: &mut Vec<Vec<String>>| {
        if let Some(w) = word.take() {
            commands.last_mut().unwrap().push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => w.extend(chars.next()),
                        Some(other) => w.push(other),
                        None => panic!("unterminated quote in {text:?}"),
                    }
                }
            }
            '&' | '|' | ';' => {
                end_word(&mut word, &mut commands);
                if matches!((c, chars.peek()), ('&', Some('&')) | ('|', Some('|'))) {
                    chars.next();
                } else {
                    assert!(c != '&', "a background job (&) in {text:?}");
                }
                commands.push(Vec::new());
            }
            c if c.is_whitespace() => end_word(&mut word, &mut commands),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut commands);
    commands.retain(|c| !c.is_empty());
    commands
}

#[test]
fn continuations_comments_flags_and_commands() {
    let file = Dockerfile::parse(
        "# syntax=docker/dockerfile:1\nARG A=1\nFROM base:1 AS one\nRUN --mount=type=cache,target=/x \\\n    # a comment inside\n    make 'a b' \\\n    && cp \"x y\" /z; true\nFROM scratch\nCOPY --from=one /z /z\nENTRYPOINT [\"z\"]\n",
    );
    assert_eq!(file.global.len(), 1);
    assert_eq!(file.stages.len(), 2);
    let run = file.stage("one").last("RUN").unwrap();
    assert_eq!(run.line, 4);
    assert_eq!(run.flag("mount"), Some("type=cache,target=/x"));
    assert_eq!(
        run.commands(),
        vec![vec!["make", "a b"], vec!["cp", "x y", "/z"], vec!["true"]]
    );
    let copy = file.runtime().last("COPY").unwrap();
    assert_eq!(
        (copy.flag("from"), copy.words()),
        (Some("one"), vec!["/z".to_string(), "/z".to_string()])
    );
    assert_eq!(
        file.runtime().last("ENTRYPOINT").unwrap().exec_form(),
        Some(vec!["z".to_string()])
    );
    assert_eq!(file.runtime().image, "scratch");
}
