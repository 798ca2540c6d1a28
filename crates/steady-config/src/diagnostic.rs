//! Located, compiler-style error reports.

use std::fmt;

use crate::locate::FieldPath;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it (the `origin` given to [`crate::parse`]).
    pub file: String,
    /// 1-based line; 0 when the problem is the file itself (missing, unreadable).
    pub line: usize,
    /// 1-based column; 0 when `line` is 0.
    pub column: usize,
    /// Field path such as `routes[0].match.headers`; empty for syntax errors.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
    /// A likely intended spelling, shown as ``(did you mean `x`?)``.
    pub suggestion: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// Writes `file:line:column: error: path: message (did you mean `x`?)`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: error: ", self.file, self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, " (did you mean `{suggestion}`?)")?;
        }
        Ok(())
    }
}

/// Every problem found in a config file, in source order; never empty when
/// returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in source order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    /// Writes one diagnostic per line, each ending in a newline, ready for `eprint!`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A problem before it is given a position: found by serde or by validation.
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    /// The field the problem is about.
    pub(crate) path: FieldPath,
    /// Where to point, when not at `path` itself (for example at `protocol`
    /// for a missing `tls`).
    pub(crate) at: Option<FieldPath>,
    /// Point at the key rather than the value (unknown fields).
    pub(crate) at_key: bool,
    pub(crate) message: String,
    pub(crate) suggestion: Option<String>,
}

impl Issue {
    pub(crate) fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            at: None,
            at_key: false,
            message: message.into(),
            suggestion: None,
        }
    }

    pub(crate) fn at(mut self, at: FieldPath) -> Self {
        self.at = Some(at);
        self
    }

    pub(crate) fn at_key(mut self) -> Self {
        self.at_key = true;
        self
    }

    pub(crate) fn suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion;
        self
    }
}

/// Returns the candidate closest to `word`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(line: usize, path: &str, suggestion: Option<&str>) -> Diagnostic {
        Diagnostic {
            file: "steady.yaml".into(),
            line,
            column: if line == 0 { 0 } else { 7 },
            path: path.into(),
            message: "unknown field `path_prefx`".into(),
            suggestion: suggestion.map(Into::into),
        }
    }

    #[test]
    fn display_is_compiler_style() {
        let all = Diagnostics(vec![
            diag(5, "routes[0].match.path_prefx", Some("path_prefix")),
            diag(0, "", None),
        ]);
        assert_eq!(
            all.to_string(),
            "steady.yaml:5:7: error: routes[0].match.path_prefx: unknown field `path_prefx` \
             (did you mean `path_prefix`?)\n\
             steady.yaml: error: unknown field `path_prefx`\n"
        );
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let fields = ["host", "path_prefix", "path", "headers", "methods"];
        assert_eq!(closest("path_prefx", fields), Some("path_prefix".into()));
        assert_eq!(closest("header", fields), Some("headers".into()));
        assert_eq!(closest("Methods", fields), Some("methods".into()));
        assert_eq!(closest("zzz", fields), None);
    }
}
