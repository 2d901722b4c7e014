//! Reading YAML: the policy files and the process configuration go through here, on
//! serde-saphyr. Parsing is bounded for hostile input (a policy file can come from anyone
//! who can write to the directory or the ConfigMap it is mounted from): text size,
//! document count, nesting depth, node count and alias expansion all have limits. Errors
//! name the field path, the line and the column, on one line, as an admin reads them:
//! `spec.routes[0]: missing field `port` at line 7, column 9`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{self, Event, Parser};
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy, Options, SnippetMode};

/// The largest YAML text read: policy files and configuration are kilobytes; a megabyte
/// allows thousands of users and domains.
pub const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;

/// The most documents in one text.
pub const MAX_DOCUMENTS: usize = 1024;

/// How many nodes an alias may bring in over the whole text. Anchors and aliases are legal
/// YAML and may shorten a policy, but an alias of an alias of ... (the "billion laughs")
/// must not expand into gigabytes.
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// Why a YAML text could not be read into the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{bytes} bytes of YAML, more than the {MAX_TEXT_BYTES} allowed")]
    TooLarge { bytes: usize },
    #[error("more than {MAX_DOCUMENTS} YAML documents")]
    TooManyDocuments,
    /// Malformed YAML, a value that does not fit the type, or a bound reached.
    /// Boxed: serde-saphyr's error is large, and every `Result` carrying this would be.
    #[error("{0}")]
    Parse(Box<ParseError>),
}

/// A serde-saphyr error with the field path it happened at and the lines before the
/// document it was read from, so that line numbers count from the start of the file.
#[derive(Debug)]
pub struct ParseError {
    /// `spec.routes[0]`; `None` at the top level or when the text is not even YAML.
    path: Option<String>,
    error: serde_saphyr::Error,
    line_offset: u64,
}

impl ParseError {
    /// The 1-based line and column of the error in the whole text, when known.
    pub fn line_column(&self) -> Option<(u64, u64)> {
        let at = self.error.location()?;
        (at.line() > 0).then(|| (at.line() + self.line_offset, at.column()))
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        // One line: the message with "at line L, column C"; no source snippet, which would
        // spread a log record over several lines.
        let options = serde_saphyr::render_options! {
            snippets: SnippetMode::Off,
            line_offset: self.line_offset,
        };
        self.error.render_to(f, options)
    }
}

impl std::error::Error for ParseError {}

/// The bounds every YAML text is read with.
fn options() -> Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_TEXT_BYTES),
            max_documents: MAX_DOCUMENTS,
            max_depth: 64,
            max_nodes: 250_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_total_scalar_bytes: MAX_TEXT_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
            max_replay_stack_depth: 16,
        },
        // A key twice in one mapping is a mistake in a policy, never an override.
        duplicate_keys: DuplicateKeyPolicy::Error,
        // `<<` merges are YAML 1.1; serde_yaml, which Sluice used before, refused them as
        // unknown fields, and a merge can quietly add rules from elsewhere in the file.
        merge_keys: MergeKeyPolicy::Error,
        with_snippet: false,
    }
}

/// Reads a text holding exactly one document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    check_size(text)?;
    deserialize(text, 0)
}

fn check_size(text: &str) -> Result<(), YamlError> {
    match text.len() {
        bytes if bytes > MAX_TEXT_BYTES => Err(YamlError::TooLarge { bytes }),
        _ => Ok(()),
    }
}

fn deserialize<T: DeserializeOwned>(text: &str, line_offset: u64) -> Result<T, YamlError> {
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            // "." is the top level, "?" a position serde cannot name (a duplicate key).
            let at = e.path().to_string();
            path = (at != "." && at != "?").then_some(at);
            e.into_inner()
        })
    })
    .map_err(|error| {
        YamlError::Parse(Box::new(ParseError {
            path,
            error,
            line_offset,
        }))
    })
}

/// One document of a multi-document text.
#[derive(Debug, Clone, Copy)]
pub struct Document<'a> {
    /// The document's text, from the line after the previous document's end.
    text: &'a str,
    /// Lines of the whole text before `text`.
    line_offset: u64,
    /// The document is empty or a bare null (a trailing `---`, only comments).
    empty: bool,
}

impl Document<'_> {
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Reads this document; line numbers in errors count from the start of the whole text.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, YamlError> {
        deserialize(self.text, self.line_offset)
    }
}

/// Splits a text into its documents, empty ones included, so that "document 3" means the
/// third in the file. Malformed YAML does not fail here: the document it sits in is
/// returned, and parsing it gives the located error.
pub fn documents(text: &str) -> Result<Vec<Document<'_>>, YamlError> {
    check_size(text)?;
    let mut parser_options = granit_parser::Options::default();
    parser_options.emit_comments = false;
    let mut out = Vec::new();
    let mut start = Boundary::default();
    let mut first_node: Option<bool> = None;
    let mut malformed = false;
    for event in Parser::new_from_str_with_options(text, parser_options) {
        let Ok((event, span)) = event else {
            malformed = true;
            break;
        };
        match event {
            Event::DocumentStart(..) => first_node = None,
            Event::DocumentEnd => {
                let end = Boundary::after(text, span.end.byte_offset(), span.end.line());
                out.push(Document {
                    text: text.get(start.byte..end.byte).unwrap_or(""),
                    line_offset: start.lines_before,
                    empty: first_node.unwrap_or(true),
                });
                if out.len() > MAX_DOCUMENTS {
                    return Err(YamlError::TooManyDocuments);
                }
                start = end;
            }
            _ if first_node.is_none() && event.is_node() => {
                first_node = Some(is_null(&event));
            }
            _ => {}
        }
    }
    if malformed && out.len() < MAX_DOCUMENTS {
        // The rest of the text is one document, whose parsing gives the located error.
        out.push(Document {
            text: text.get(start.byte..).unwrap_or(""),
            line_offset: start.lines_before,
            empty: false,
        });
    }
    Ok(out)
}

/// Where the next document's text starts: at the beginning of a line, so that columns in
/// its errors are the file's.
#[derive(Debug, Default, Clone, Copy)]
struct Boundary {
    byte: usize,
    lines_before: u64,
}

impl Boundary {
    /// The start of the line at or after a document's end (`line` is 1-based). What a
    /// document end leaves on its line is a `...` marker, a comment or blanks.
    fn after(text: &str, byte: Option<usize>, line: usize) -> Boundary {
        let byte = byte.unwrap_or(text.len()).min(text.len());
        let line = line.max(1) as u64;
        if byte == 0 || text.as_bytes()[byte - 1] == b'\n' {
            return Boundary {
                byte,
                lines_before: line - 1,
            };
        }
        match memchr::memchr(b'\n', &text.as_bytes()[byte..]) {
            Some(i) => Boundary {
                byte: byte + i + 1,
                lines_before: line,
            },
            None => Boundary {
                byte: text.len(),
                lines_before: line,
            },
        }
    }
}

/// A document whose root is a plain `null`, `~` or nothing reads as null.
fn is_null(event: &Event<'_>) -> bool {
    match event {
        Event::Scalar(value, style, _, tag) => {
            tag.is_none()
                && *style == granit_parser::ScalarStyle::Plain
                && matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL")
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
