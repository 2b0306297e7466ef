//! Reading a TOML document while keeping every value's position, and collecting problems as
//! `file:line:column` diagnostics instead of stopping at the first.
//!
//! The document is parsed into toml's spanned tree ([`DeTable`]); [`Table`] hands out typed
//! values as [`Spanned`] so that later checks (cross references, schedules) can still point at
//! the value they concern.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::Diagnostic;

/// The document being read and the problems found so far.
pub(crate) struct Doc<'t> {
    file: &'t str,
    text: &'t str,
    problems: Vec<Diagnostic>,
}

impl<'t> Doc<'t> {
    pub(crate) fn new(file: &'t str, text: &'t str) -> Doc<'t> {
        Doc { file, text, problems: Vec::new() }
    }

    /// Record a problem at the start of `span`.
    pub(crate) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.problems.push(Diagnostic { file: self.file.to_string(), line, column, message: message.into() });
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// The problems, in file order.
    pub(crate) fn into_problems(mut self) -> Vec<Diagnostic> {
        self.problems.sort_by_key(|d| (d.line, d.column));
        self.problems.dedup();
        self.problems
    }

    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// One TOML table with the keys it may hold.
pub(crate) struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    /// How messages name it: `[server]`, `[sources.uploads]`, `retention in [sources.uploads]`.
    pub(crate) name: String,
    /// Where it is named in the file, for problems such as a missing key.
    pub(crate) span: Range<usize>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Open `entries`, reporting every key not in `known`.
    pub(crate) fn open(
        doc: &mut Doc<'_>,
        entries: &'a DeTable<'i>,
        name: String,
        span: Range<usize>,
        known: &[&str],
    ) -> Table<'a, 'i> {
        for (key, _) in entries.iter() {
            let key_text: &str = key.get_ref();
            if known.contains(&key_text) {
                continue;
            }
            let hint = match crate::nearest(key_text, known.iter().copied()) {
                Some(near) => format!("did you mean '{near}'? "),
                None => String::new(),
            };
            doc.error(
                &key.span(),
                format!("unknown field '{key_text}' in {name}; {hint}expected one of: {}", known.join(", ")),
            );
        }
        Table { entries, name, span }
    }

    /// Open a table whose keys are names chosen by the user (`[sources]`), so none is unknown.
    pub(crate) fn names(entries: &'a DeTable<'i>, name: String, span: Range<usize>) -> Table<'a, 'i> {
        Table { entries, name, span }
    }

    /// The value under `key`, with the span of the key.
    pub(crate) fn entry(&self, key: &str) -> Option<(Range<usize>, &'a Spanned<DeValue<'i>>)> {
        self.entries.get_key_value(key).map(|(k, v)| (k.span(), v))
    }

    fn typed<T>(
        &self,
        doc: &mut Doc<'_>,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&DeValue<'i>) -> Option<T>,
    ) -> Option<Spanned<T>> {
        let (_, value) = self.entry(key)?;
        match convert(value.get_ref()) {
            Some(v) => Some(Spanned::new(value.span(), v)),
            None => {
                doc.error(
                    &value.span(),
                    format!("'{key}' in {} must be {expected}, not {}", self.name, a(value.get_ref().type_str())),
                );
                None
            }
        }
    }

    /// An optional string.
    pub(crate) fn string(&self, doc: &mut Doc<'_>, key: &str) -> Option<Spanned<String>> {
        self.typed(doc, key, "a string", |v| v.as_str().map(str::to_string))
    }

    /// A required string; `example` is a value to suggest when it is missing.
    pub(crate) fn required_string(&self, doc: &mut Doc<'_>, key: &str, example: &str) -> Option<Spanned<String>> {
        if self.entry(key).is_none() {
            doc.error(&self.span, format!("missing field '{key}' in {}; add e.g. {key} = {example:?}", self.name));
            return None;
        }
        self.string(doc, key)
    }

    /// An optional array of strings.
    pub(crate) fn strings(&self, doc: &mut Doc<'_>, key: &str) -> Option<Vec<Spanned<String>>> {
        let items = self
            .typed(doc, key, "an array of strings", |v| v.as_array().map(|a| a.iter().cloned().collect::<Vec<_>>()))?;
        let mut out = Vec::new();
        for item in items.into_inner() {
            match item.get_ref().as_str() {
                Some(s) => out.push(Spanned::new(item.span(), s.to_string())),
                None => doc.error(
                    &item.span(),
                    format!("'{key}' in {} must hold strings, not {}", self.name, a(item.get_ref().type_str())),
                ),
            }
        }
        Some(out)
    }

    /// An optional positive whole number.
    pub(crate) fn count(&self, doc: &mut Doc<'_>, key: &str) -> Option<Spanned<u32>> {
        let value = self.typed(doc, key, "a whole number", |v| {
            v.as_integer().map(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
        })?;
        let span = value.span();
        match value.into_inner().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => Some(Spanned::new(span, n)),
            _ => {
                doc.error(
                    &span,
                    format!(
                        "'{key}' in {} must be a whole number from 1 to {}; remove it to not use this rule",
                        self.name,
                        u32::MAX
                    ),
                );
                None
            }
        }
    }

    /// An optional sub-table (inline `{ ... }` or `[a.b]`), with its key's span.
    pub(crate) fn table(&self, doc: &mut Doc<'_>, key: &str) -> Option<(&'a DeTable<'i>, Range<usize>)> {
        let (key_span, value) = self.entry(key)?;
        match value.get_ref().as_table() {
            Some(t) => Some((t, key_span)),
            None => {
                doc.error(
                    &value.span(),
                    format!(
                        "'{key}' in {} must be a table, e.g. {key} = {{ ... }}, not {}",
                        self.name,
                        a(value.get_ref().type_str())
                    ),
                );
                None
            }
        }
    }

    /// Every entry whose value must itself be a table: `[sources.NAME]`.
    pub(crate) fn sub_tables(&self, doc: &mut Doc<'_>) -> Vec<(Spanned<String>, &'a DeTable<'i>)> {
        let mut out = Vec::new();
        for (key, value) in self.entries.iter() {
            let name: &str = key.get_ref();
            match value.get_ref().as_table() {
                Some(t) => out.push((Spanned::new(key.span(), name.to_string()), t)),
                None => doc.error(
                    &value.span(),
                    format!(
                        "'{name}' in {} must be a table: write [{}.{name}] and its fields",
                        self.name,
                        self.name.trim_matches(['[', ']'])
                    ),
                ),
            }
        }
        out
    }

    /// The tables of an array of tables (`[[notify]]`), with each one's span.
    pub(crate) fn array_of_tables(&self, doc: &mut Doc<'_>, key: &str) -> Vec<(Range<usize>, &'a DeTable<'i>)> {
        let Some((_, value)) = self.entry(key) else {
            return Vec::new();
        };
        let Some(items) = value.get_ref().as_array() else {
            doc.error(&value.span(), format!("'{key}' must be an array of tables: write [[{key}]] for each one"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_table() {
                Some(t) => out.push((item.span(), t)),
                None => doc.error(&item.span(), format!("each '{key}' must be a table: write [[{key}]] for each one")),
            }
        }
        out
    }
}

/// Parse `text` into its spanned tree, or report every syntax error.
pub(crate) fn parse_document<'i>(doc: &mut Doc<'_>, text: &'i str) -> Option<Spanned<DeTable<'i>>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    for error in &errors {
        let span = error.span().unwrap_or(0..0);
        doc.error(&span, format!("TOML syntax: {}", error.message().trim_end_matches('\n')));
    }
    if errors.is_empty() { Some(root) } else { None }
}

/// "a string", "an integer", "an array".
fn a(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}
