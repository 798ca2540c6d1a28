//! Field paths (`routes[0].match.headers`) and where each one sits in the
//! source text.
//!
//! serde works on a value tree that has lost its positions, so positions come
//! from a second pass over the text with `yaml-rust2`'s event parser, which
//! reports a marker for every node. The two parsers meet on field paths.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// One step in a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path from the document root to a node, displayed as `routes[0].match.headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FieldPath(pub(crate) Vec<Seg>);

impl FieldPath {
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// Returns this path extended by a key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// Returns this path extended by an index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    pub(crate) fn starts_with(&self, prefix: &FieldPath) -> bool {
        self.0.starts_with(&prefix.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(marker: &Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: marker.line().max(1),
            column: marker.col() + 1,
        }
    }
}

/// Where a node's key (for mapping entries) and value start.
#[derive(Debug, Clone, Copy)]
struct Spot {
    key: Option<Pos>,
    value: Pos,
}

/// Maps field paths to source positions.
#[derive(Debug, Default)]
pub(crate) struct LocationIndex {
    spots: HashMap<FieldPath, Spot>,
    /// Keys that appear twice in one mapping: the path and the second key's position.
    pub(crate) duplicates: Vec<(FieldPath, Pos)>,
}

enum Frame {
    Map {
        path: FieldPath,
        pending_key: Option<(String, Pos)>,
        seen_key: bool,
    },
    Seq {
        path: FieldPath,
        next: usize,
    },
}

/// Marks the subtree of a complex (non-scalar) mapping key, which config keys never are.
const COMPLEX_KEY: &str = "\u{0}complex-key";

impl LocationIndex {
    /// Indexes the first document of `text`; stops quietly at a syntax error,
    /// keeping what it saw before it.
    pub(crate) fn build(text: &str) -> Self {
        let mut index = LocationIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, marker)) = parser.next_token() {
            let pos = Pos::from_marker(&marker);
            match event {
                Event::Scalar(text, ..) => {
                    index.node(&mut stack, pos, Some(text));
                }
                Event::Alias(_) => {
                    index.node(&mut stack, pos, None);
                }
                Event::MappingStart(..) => {
                    let path = index
                        .node(&mut stack, pos, None)
                        .unwrap_or_else(complex_key_path);
                    stack.push(Frame::Map {
                        path,
                        pending_key: None,
                        seen_key: false,
                    });
                }
                Event::SequenceStart(..) => {
                    let path = index
                        .node(&mut stack, pos, None)
                        .unwrap_or_else(complex_key_path);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::DocumentEnd | Event::StreamEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentStart => {}
            }
        }
        index
    }

    /// Handles the start of a node. Returns its path, or `None` when the node is
    /// a mapping key (a scalar key is remembered; a complex key is not indexed).
    fn node(&mut self, stack: &mut [Frame], pos: Pos, scalar: Option<String>) -> Option<FieldPath> {
        let (path, key) = match stack.last_mut() {
            None => (FieldPath::root(), None),
            Some(Frame::Seq { path, next }) => {
                let path = path.index(*next);
                *next += 1;
                (path, None)
            }
            Some(Frame::Map {
                path,
                pending_key,
                seen_key,
            }) => match pending_key.take() {
                None => {
                    // This node is a key.
                    if !*seen_key {
                        *seen_key = true;
                        // Block mappings report their start at the first `:`;
                        // the first key is where a reader sees the mapping begin.
                        if let Some(spot) = self.spots.get_mut(path) {
                            spot.value = pos;
                        }
                    }
                    let name = scalar.unwrap_or_else(|| COMPLEX_KEY.to_owned());
                    let key_path = path.key(&name);
                    if self.spots.contains_key(&key_path) && name != COMPLEX_KEY {
                        self.duplicates.push((key_path, pos));
                    }
                    *pending_key = Some((name, pos));
                    return None;
                }
                Some((name, key_pos)) => (path.key(&name), Some(key_pos)),
            },
        };
        self.spots
            .entry(path.clone())
            .or_insert(Spot { key, value: pos });
        Some(path)
    }

    /// Returns the position of `path`: its key when `prefer_key` and it has one,
    /// else its value; for a path not in the text, the nearest ancestor that is.
    pub(crate) fn locate(&self, path: &FieldPath, prefer_key: bool) -> Pos {
        let mut segs = path.0.as_slice();
        loop {
            if let Some(spot) = self.spots.get(&FieldPath(segs.to_vec())) {
                return match (prefer_key, spot.key) {
                    (true, Some(key)) => key,
                    _ => spot.value,
                };
            }
            match segs.split_last() {
                Some((_, parent)) => segs = parent,
                None => return Pos::START,
            }
        }
    }
}

fn complex_key_path() -> FieldPath {
    FieldPath::root().key(COMPLEX_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> FieldPath {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            if !key.is_empty() {
                segs.push(Seg::Key(key.to_owned()));
            }
            for index in rest.split('[') {
                if let Some(n) = index.strip_suffix(']') {
                    segs.push(Seg::Index(n.parse().unwrap()));
                }
            }
        }
        FieldPath(segs)
    }

    fn at(index: &LocationIndex, p: &str, key: bool) -> (usize, usize) {
        let pos = index.locate(&path(p), key);
        (pos.line, pos.column)
    }

    #[test]
    fn paths_display_like_code() {
        assert_eq!(
            path("routes[0].match.headers").to_string(),
            "routes[0].match.headers"
        );
        assert_eq!(path("a[1][2].b").to_string(), "a[1][2].b");
    }

    #[test]
    fn block_and_flow_positions() {
        let text = "\
listeners:
  - name: web
    bind: 127.0.0.1:8080
routes:
  - {name: api, match: {path_prefix: /v1}, list: [a, b]}
";
        let index = LocationIndex::build(text);
        assert_eq!(at(&index, "listeners", true), (1, 1));
        assert_eq!(at(&index, "listeners[0]", false), (2, 5));
        assert_eq!(at(&index, "listeners[0].bind", true), (3, 5));
        assert_eq!(at(&index, "listeners[0].bind", false), (3, 11));
        assert_eq!(at(&index, "routes[0].match.path_prefix", true), (5, 25));
        assert_eq!(at(&index, "routes[0].match.path_prefix", false), (5, 38));
        assert_eq!(at(&index, "routes[0].list[1]", false), (5, 54));
        // Absent paths fall back to the nearest ancestor.
        assert_eq!(at(&index, "listeners[0].tls.cert", false), (2, 5));
        assert_eq!(at(&index, "upstreams", false), (1, 1));
    }

    #[test]
    fn complex_keys_and_aliases_do_not_confuse_the_index() {
        let text = "? [a, b]\n: x\nc: &anchor {d: 1}\ne: *anchor\nf: 2\n";
        let index = LocationIndex::build(text);
        assert_eq!(at(&index, "c.d", true), (3, 13));
        assert_eq!(at(&index, "e", false), (4, 4));
        assert_eq!(at(&index, "f", true), (5, 1));
    }

    #[test]
    fn duplicate_keys_are_found() {
        let index = LocationIndex::build("a: 1\nb:\n  c: 1\n  c: 2\n");
        assert_eq!(index.duplicates.len(), 1);
        assert_eq!(index.duplicates[0].0, path("b.c"));
        assert_eq!(index.duplicates[0].1, Pos { line: 4, column: 3 });
    }
}
