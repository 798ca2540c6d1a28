//! Text to validated [`Config`], collecting every problem with its position.
//!
//! The steps:
//! 1. `serde_yaml_ng` parses the text into a value tree; a syntax error stops here.
//! 2. The tree is deserialized into [`Config`] with `serde_path_to_error`. On an
//!    error the offending node is recorded, cut out of the tree, and the
//!    deserialization retried, so every unknown key and bad value is found.
//!    Cutting a sequence element shifts later indices; [`Removals`] maps paths
//!    back to the indices in the file.
//! 3. [`mod@crate::validate`] checks meaning; problems inside nodes already cut out
//!    are dropped, so one mistake is reported once.
//! 4. [`LocationIndex`] turns each field path into a line and column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::diagnostic::{closest, Diagnostic, Diagnostics, Issue};
use crate::locate::{FieldPath, LocationIndex, Pos, Seg};
use crate::schema::Config;
use crate::validate::{check, resolve, Context};

/// Deserialization rounds before giving up on a hopeless file.
const MAX_ROUNDS: usize = 200;

/// Reads, parses and validates the config file at `path`.
///
/// Relative TLS `cert` and `key` paths are taken relative to the directory
/// of `path`, and the returned config holds them joined to it. A missing or
/// unreadable file is reported as a [`Diagnostic`] with line 0.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            _ => e.to_string(),
        };
        file_error(&origin, format!("cannot read config file: {reason}"))
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let text = String::from_utf8_lossy(valid);
            let line = text.matches('\n').count() + 1;
            let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(Diagnostics(vec![Diagnostic {
                file: origin,
                line,
                column,
                path: String::new(),
                message: "the file is not valid UTF-8".into(),
                suggestion: None,
            }]));
        }
    };
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf);
    parse_with(&text, &origin, base_dir)
}

/// Parses and validates config `text`; `origin` names it in diagnostics
/// (usually the file path). Relative TLS paths are left as written, relative
/// to the current directory.
pub fn parse(text: &str, origin: &str) -> Result<Config, Diagnostics> {
    parse_with(text, origin, None)
}

fn file_error(origin: &str, message: String) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        file: origin.to_owned(),
        line: 0,
        column: 0,
        path: String::new(),
        message,
        suggestion: None,
    }])
}

fn parse_with(text: &str, origin: &str, base_dir: Option<PathBuf>) -> Result<Config, Diagnostics> {
    let index = LocationIndex::build(text);
    let report = Reporter {
        origin,
        index: &index,
    };

    let mut value: Value = match serde_yaml_ng::from_str(text) {
        Ok(value) => value,
        Err(e) => return Err(Diagnostics(report.syntax(&e, text))),
    };
    if let Err(e) = value.apply_merge() {
        return Err(Diagnostics(report.syntax(&e, text)));
    }
    match value {
        Value::Mapping(_) => {}
        // An empty file; validation asks for listeners.
        Value::Null => value = Value::Mapping(Default::default()),
        other => {
            let found = kind_of(&other);
            let issue = Issue::new(
                FieldPath::root(),
                format!(
                    "the top level must be a mapping of sections (`runtime`, `admin`, \
                     `listeners`, `routes`, `upstreams`), not {found}"
                ),
            );
            return Err(Diagnostics(vec![report.diagnostic(issue)]));
        }
    }

    let mut issues = Vec::new();
    strip_non_string_keys(&mut value, &FieldPath::root(), &mut issues);
    let raw = value.clone();
    let mut removals = Removals::default();
    let config = deserialize_recovering(&mut value, &mut removals, &mut issues);

    let mut ctx = context(&raw, &removals.dropped);
    ctx.base_dir = base_dir.clone();
    for mut issue in check(&config, &ctx) {
        issue.path = removals.to_original(&issue.path);
        issue.at = issue.at.map(|at| removals.to_original(&at));
        let already_reported = removals.dropped.iter().any(|dropped| {
            issue.path.starts_with(dropped)
                || issue.at.as_ref().is_some_and(|at| at.starts_with(dropped))
        });
        if !already_reported {
            issues.push(issue);
        }
    }

    if issues.is_empty() {
        let mut config = config;
        normalize(&mut config, base_dir.as_deref());
        return Ok(config);
    }
    let mut diagnostics: Vec<Diagnostic> =
        issues.into_iter().map(|i| report.diagnostic(i)).collect();
    diagnostics.sort_by_key(|d| (d.line, d.column));
    diagnostics.dedup();
    Err(Diagnostics(diagnostics))
}

/// Normalizes a valid config: header names and hosts to lower case (both are
/// case-insensitive), relative TLS paths (listeners' certificates and keys, the OTLP
/// receiver's CA file) joined to `base_dir`.
fn normalize(config: &mut Config, base_dir: Option<&Path>) {
    for route in &mut config.routes {
        let matcher = &mut route.matcher;
        matcher.headers = std::mem::take(&mut matcher.headers)
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        if let Some(host) = &mut matcher.host {
            host.make_ascii_lowercase();
        }
    }
    for listener in &mut config.listeners {
        if let Some(tls) = &mut listener.tls {
            tls.cert = resolve(base_dir, &tls.cert);
            tls.key = resolve(base_dir, &tls.key);
        }
    }
    let otlp_tls = config.tracing.as_mut().and_then(|t| t.otlp.tls.as_mut());
    if let Some(ca) = otlp_tls.and_then(|t| t.ca_file.as_mut()) {
        *ca = resolve(base_dir, ca);
    }
}

/// Turns issues into located diagnostics.
struct Reporter<'a> {
    origin: &'a str,
    index: &'a LocationIndex,
}

impl Reporter<'_> {
    fn diagnostic(&self, issue: Issue) -> Diagnostic {
        let pos = self
            .index
            .locate(issue.at.as_ref().unwrap_or(&issue.path), issue.at_key);
        self.at(pos, issue.path.to_string(), issue.message, issue.suggestion)
    }

    fn at(
        &self,
        pos: Pos,
        path: String,
        message: String,
        suggestion: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.origin.to_owned(),
            line: pos.line,
            column: pos.column,
            path,
            message,
            suggestion,
        }
    }

    /// Reports a YAML syntax error (or a value the YAML parser refused).
    fn syntax(&self, error: &serde_yaml_ng::Error, text: &str) -> Vec<Diagnostic> {
        let message = strip_location(&error.to_string());
        // serde_yaml_ng prefixes some value errors with the field path.
        let (path, mut message) = match message.split_once(": ") {
            Some((path, rest)) if !path.contains(' ') && !path.is_empty() => {
                (path.to_owned(), rest.to_owned())
            }
            _ => (String::new(), message),
        };
        if message.starts_with("duplicate entry") && !self.index.duplicates.is_empty() {
            return self
                .index
                .duplicates
                .iter()
                .map(|(path, pos)| {
                    let key = match path.0.last() {
                        Some(Seg::Key(key)) => key.as_str(),
                        _ => "",
                    };
                    let message = format!("key `{key}` appears twice in the same mapping");
                    self.at(*pos, path.to_string(), message, None)
                })
                .collect();
        }
        let pos = error
            .location()
            .map(|l| Pos {
                line: l.line().max(1),
                column: l.column().max(1),
            })
            .unwrap_or(Pos::START);
        if message.contains("as u128") || message.contains("as i128") {
            message = "the number is too large".into();
        }
        let at_tab = text
            .lines()
            .nth(pos.line - 1)
            .and_then(|l| l.chars().nth(pos.column - 1))
            == Some('\t');
        if at_tab {
            message = "a tab character; YAML indents with spaces only".into();
        }
        if message.contains("more than one document") {
            message = "the file holds more than one YAML document (`---`); steady reads one".into();
        }
        if path.is_empty() {
            message = format!("invalid YAML: {message}");
        }
        vec![self.at(pos, path, message, None)]
    }
}

/// Removes ` at line N column M` (and `at byte B line N column M`) from a
/// parser message: the position goes in the diagnostic's own fields.
fn strip_location(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(start) = out.find(" at ").filter(|&i| {
        let rest = &out[i + 4..];
        rest.starts_with("line ") || rest.starts_with("byte ")
    }) {
        let rest = &out[start + 4..];
        let mut end = start + 4;
        let mut words = 0;
        // Skip `line N column M` or `byte B line N column M`.
        for (offset, word) in split_keep_offsets(rest) {
            let is_number = word.bytes().all(|b| b.is_ascii_digit() || b == b',');
            if !(matches!(word, "line" | "column" | "byte") || is_number) {
                break;
            }
            end = start + 4 + offset + word.len();
            words += 1;
        }
        if words == 0 {
            break;
        }
        let tail = out[end..].trim_start_matches(',').to_owned();
        out.truncate(start);
        if !tail.trim().is_empty() {
            out.push(',');
            out.push_str(&tail);
        }
    }
    out
}

fn split_keep_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(' ').scan(0, |offset, word| {
        let start = *offset;
        *offset += word.len() + 1;
        Some((start, word.trim_end_matches(',')))
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Reports and removes mapping keys that are not strings (`1: x`, `true: y`):
/// no config key is one, and serde would read a number as a field index.
fn strip_non_string_keys(value: &mut Value, path: &FieldPath, issues: &mut Vec<Issue>) {
    match value {
        Value::Mapping(mapping) => {
            let bad: Vec<Value> = mapping.keys().filter(|k| !k.is_string()).cloned().collect();
            for key in bad {
                let shown = match &key {
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => "~".to_owned(),
                    _ => String::new(),
                };
                let message = format!("keys must be text, and this key is {}", kind_of(&key));
                issues.push(Issue::new(path.key(&shown), message).at_key());
                mapping.shift_remove(&key);
            }
            for (key, child) in mapping.iter_mut() {
                if let Some(key) = key.as_str() {
                    strip_non_string_keys(child, &path.key(key), issues);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strip_non_string_keys(item, &path.index(i), issues);
            }
        }
        Value::Tagged(tagged) => strip_non_string_keys(&mut tagged.value, path, issues),
        _ => {}
    }
}

/// Nodes cut out of the value tree, in file coordinates.
#[derive(Debug, Default)]
struct Removals {
    /// For each sequence (by its path in the file), the file indices cut from it, sorted.
    indices: HashMap<FieldPath, Vec<usize>>,
    /// The file path of every node cut out.
    dropped: Vec<FieldPath>,
}

impl Removals {
    /// Maps a path in the current tree to the path in the file.
    fn to_original(&self, current: &FieldPath) -> FieldPath {
        let mut out = FieldPath::root();
        for seg in &current.0 {
            let seg = match seg {
                Seg::Key(key) => Seg::Key(key.clone()),
                Seg::Index(index) => {
                    let mut original = *index;
                    for &cut in self.indices.get(&out).into_iter().flatten() {
                        if cut <= original {
                            original += 1;
                        }
                    }
                    Seg::Index(original)
                }
            };
            out.0.push(seg);
        }
        out
    }

    /// Records that the node at `current` was cut.
    fn record(&mut self, current: &FieldPath) {
        let original = self.to_original(current);
        if let Some((Seg::Index(index), parent)) = original.0.split_last() {
            let cuts = self.indices.entry(FieldPath(parent.to_vec())).or_default();
            let at = cuts.binary_search(index).unwrap_or_else(|at| at);
            cuts.insert(at, *index);
        }
        self.dropped.push(original);
    }
}

/// Cuts the node at `path` out of `value`; false if there is no such node.
fn remove_at(value: &mut Value, path: &FieldPath) -> bool {
    let Some((last, parents)) = path.0.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        let next = match (seg, node) {
            (Seg::Key(key), Value::Mapping(mapping)) => mapping.get_mut(key.as_str()),
            (Seg::Index(index), Value::Sequence(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node) {
        (Seg::Key(key), Value::Mapping(mapping)) => mapping.shift_remove(key.as_str()).is_some(),
        (Seg::Index(index), Value::Sequence(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

/// Deserializes `value` into a [`Config`], cutting out and reporting each node
/// serde rejects until the rest deserializes.
fn deserialize_recovering(
    value: &mut Value,
    removals: &mut Removals,
    issues: &mut Vec<Issue>,
) -> Config {
    for _ in 0..MAX_ROUNDS {
        let error = match serde_path_to_error::deserialize::<_, Config>(&*value) {
            Ok(config) => return config,
            Err(error) => error,
        };
        let mut current = FieldPath::root();
        for segment in error.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => current.0.push(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => current.0.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    current.0.push(Seg::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let issue = describe(&removals.to_original(&current), &error.inner().to_string());
        // A required field cut out for a bad value is then missing: one report is enough.
        if !removals.dropped.contains(&issue.path) {
            issues.push(issue);
        }

        // Cut the node out; if it cannot be found, cut its nearest parent.
        loop {
            if current.0.is_empty() {
                // Nothing left to cut: the whole file is unusable.
                removals.record(&current);
                return Config::default();
            }
            if remove_at(value, &current) {
                removals.record(&current);
                break;
            }
            current.0.pop();
        }
    }
    issues.push(Issue::new(
        FieldPath::root(),
        "too many errors; fix these and check again",
    ));
    removals.record(&FieldPath::root());
    Config::default()
}

/// Turns a serde message about the node at `path` into an issue.
fn describe(path: &FieldPath, message: &str) -> Issue {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let expected = || quoted.iter().skip(1).copied();
    let expected_list = || {
        expected()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };

    if let Some(field) = message.strip_prefix("unknown field `").and(quoted.first()) {
        let suggestion = closest(field, expected());
        let mut text = format!("unknown field `{field}`");
        if suggestion.is_none() {
            match quoted.len() {
                1 => text.push_str("; this section has no fields"),
                _ => text.push_str(&format!("; expected one of {}", expected_list())),
            }
        }
        return Issue::new(path.clone(), text).at_key().suggest(suggestion);
    }
    if let Some(variant) = message
        .strip_prefix("unknown variant `")
        .and(quoted.first())
    {
        let suggestion = closest(variant, expected());
        let text = format!("`{variant}` is not one of {}", expected_list());
        return Issue::new(path.clone(), text).suggest(suggestion);
    }
    if let Some(field) = message.strip_prefix("missing field `").and(quoted.first()) {
        return Issue::new(path.key(field), format!("missing required field `{field}`"))
            .at(path.clone());
    }
    let text = match message.strip_prefix("invalid type: unit value, expected ") {
        Some(expected) => format!("empty; expected {expected}"),
        None => message.to_owned(),
    };
    Issue::new(path.clone(), text)
}

/// Collects what the cut-out nodes were, so that references to them are not
/// reported as missing.
fn context(raw: &Value, dropped: &[FieldPath]) -> Context {
    let mut ctx = Context::default();
    let field = |section: &str, index: usize, field: &str| -> Option<String> {
        raw.get(section)?
            .get(index)?
            .get(field)?
            .as_str()
            .map(str::to_owned)
    };
    for path in dropped {
        match path.0.as_slice() {
            [] => {
                ctx.listeners_unknown = true;
                ctx.upstreams_unknown = true;
                ctx.routes_unknown = true;
            }
            [Seg::Key(section)] => match section.as_str() {
                "listeners" => ctx.listeners_unknown = true,
                "upstreams" => ctx.upstreams_unknown = true,
                "routes" => ctx.routes_unknown = true,
                _ => {}
            },
            [Seg::Key(section), Seg::Index(i)] => match section.as_str() {
                "listeners" => match field(section, *i, "name") {
                    Some(name) => drop(ctx.dropped_listeners.insert(name)),
                    None => ctx.listeners_unknown = true,
                },
                "upstreams" => match field(section, *i, "name") {
                    Some(name) => drop(ctx.dropped_upstreams.insert(name)),
                    None => ctx.upstreams_unknown = true,
                },
                "routes" => match field(section, *i, "listener") {
                    Some(listener) => drop(ctx.dropped_route_listeners.insert(listener)),
                    None => ctx.routes_unknown = true,
                },
                _ => {}
            },
            _ => {}
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_parser_positions() {
        assert_eq!(
            strip_location(
                "did not find expected node content at line 2 column 1, while parsing a flow node"
            ),
            "did not find expected node content, while parsing a flow node"
        );
        assert_eq!(
            strip_location("unknown anchor at line 3 column 7"),
            "unknown anchor"
        );
        assert_eq!(strip_location("look at this"), "look at this");
    }

    #[test]
    fn removals_map_indices_back_to_the_file() {
        let mut removals = Removals::default();
        let section = FieldPath::root().key("listeners");
        // Cut file element 1, then what is now element 1 (file element 2).
        removals.record(&section.index(1));
        removals.record(&section.index(1));
        assert_eq!(removals.to_original(&section.index(0)), section.index(0));
        assert_eq!(removals.to_original(&section.index(1)), section.index(3));
        assert_eq!(removals.dropped, vec![section.index(1), section.index(2)]);
    }
}
