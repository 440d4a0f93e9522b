//! Column lookup by header name and typed field access, shared by the table parsers.

use super::ParseError;
use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

use nom::IResult;
use nom::branch::alt;
use nom::bytes::complete::{is_not, tag, take_while};
use nom::character::complete::{char, space0, space1};
use nom::combinator::{all_consuming, map};
use nom::multi::{fold_many0, separated_list0, separated_list1};
use nom::sequence::{delimited, preceded, terminated};

/// The header of a table output: column name -> position.
#[derive(Debug)]
pub(crate) struct Columns {
    what: &'static str,
    index: HashMap<String, usize>,
}

impl Columns {
    pub(crate) fn new<'a>(what: &'static str, names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = HashMap::new();
        for (position, name) in names.into_iter().enumerate() {
            // The first occurrence wins if a version ever repeats a name.
            index.entry(name.to_owned()).or_insert(position);
        }
        Columns { what, index }
    }

    /// Fails when a column the caller cannot do without is absent from the header.
    pub(crate) fn require(&self, names: &[&str], header_line: usize) -> Result<(), ParseError> {
        match names.iter().find(|name| !self.index.contains_key(**name)) {
            Some(missing) => Err(ParseError::new(
                self.what,
                header_line,
                format!("header has no `{missing}` column"),
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn row<'r>(&'r self, line: usize, fields: &'r [Cow<'r, str>]) -> Row<'r> {
        Row {
            columns: self,
            line,
            fields,
        }
    }
}

/// One data line, read through its table's header.
pub(crate) struct Row<'r> {
    columns: &'r Columns,
    line: usize,
    fields: &'r [Cow<'r, str>],
}

impl Row<'_> {
    /// The raw field, or `None` when the column is unknown or the line is short.
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        let position = *self.columns.index.get(name)?;
        self.fields.get(position).map(|field| field.as_ref())
    }

    /// The field as text; empty and `-` (HAProxy's "none") read as `None`.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.raw(name)
            .filter(|value| !value.is_empty() && *value != "-")
            .map(str::to_owned)
    }

    pub(crate) fn required_text(&self, name: &str) -> Result<String, ParseError> {
        self.text(name)
            .ok_or_else(|| self.error(format!("`{name}` is missing or empty")))
    }

    /// The field as a number; empty and `-` read as `None`, anything else unparsable is an error.
    pub(crate) fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, ParseError> {
        match self.raw(name) {
            None | Some("") | Some("-") => Ok(None),
            Some(value) => value
                .parse::<T>()
                .map(Some)
                .map_err(|_| self.error(format!("`{name}` is not a valid number: {value:?}"))),
        }
    }

    /// A "seconds since" field. HAProxy subtracts the event's time from its own thread's
    /// clock, so an event another thread stamped a moment ago can read `-1`: that is now.
    pub(crate) fn seconds_since(&self, name: &str) -> Result<Option<u64>, ParseError> {
        Ok(self
            .number::<i64>(name)?
            .map(|secs| u64::try_from(secs).unwrap_or(0)))
    }

    pub(crate) fn required_number<T: FromStr>(&self, name: &str) -> Result<T, ParseError> {
        self.number(name)?
            .ok_or_else(|| self.error(format!("`{name}` is missing or empty")))
    }

    pub(crate) fn error(&self, reason: impl Into<String>) -> ParseError {
        ParseError::new(self.columns.what, self.line, reason)
    }
}

/// Splits one line on runs of spaces (the `show servers state|conn` format).
pub(crate) fn space_separated(line: &str) -> Vec<Cow<'_, str>> {
    let tokens: IResult<&str, Vec<&str>> = preceded(
        space0,
        terminated(separated_list0(space1, is_not(" \t")), space0),
    )(line);
    match tokens {
        Ok((_, tokens)) => tokens.into_iter().map(Cow::Borrowed).collect(),
        // Unreachable for these combinators, but a parser never panics: no fields.
        Err(_) => Vec::new(),
    }
}

/// Splits one CSV line. HAProxy quotes a field (RFC 4180 style, `""` for a quote) when it
/// holds a comma or a quote, e.g. a check description; all other fields are bare.
pub(crate) fn csv_fields(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    let quoted = delimited(
        char('"'),
        fold_many0(
            alt((is_not("\""), map(tag("\"\""), |_| "\""))),
            String::new,
            |mut acc, piece: &str| {
                acc.push_str(piece);
                acc
            },
        ),
        char('"'),
    );
    let field = alt((
        map(quoted, Cow::Owned),
        map(take_while(|c| c != ',' && c != '"'), Cow::Borrowed),
    ));
    let parsed: IResult<&str, Vec<Cow<'_, str>>> =
        all_consuming(separated_list1(char(','), field))(line);
    parsed
        .map(|(_, fields)| fields)
        .map_err(|_| "malformed CSV (unbalanced quote?)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_csv(input: &str, expected: Option<&[&str]>) {
        let got = csv_fields(input).ok();
        let got: Option<Vec<String>> =
            got.map(|fields| fields.iter().map(|f| f.to_string()).collect());
        let expected: Option<Vec<String>> =
            expected.map(|fields| fields.iter().map(|f| (*f).to_owned()).collect());
        assert_eq!(got, expected, "{input:?}");
    }

    #[test]
    fn csv_lines() {
        check_csv("a,b,,c,", Some(&["a", "b", "", "c", ""]));
        check_csv("", Some(&[""]));
        check_csv(
            "be,s1,\"HTTP status check returned code <3C>503<3E>, bad\",x",
            Some(&[
                "be",
                "s1",
                "HTTP status check returned code <3C>503<3E>, bad",
                "x",
            ]),
        );
        check_csv("\"say \"\"hi\"\"\",2", Some(&["say \"hi\"", "2"]));
        check_csv("a,\"unterminated", None);
        check_csv("a,b\"c", None);
    }

    fn check_spaces(input: &str, expected: &[&str]) {
        let got: Vec<String> = space_separated(input)
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(got, expected, "{input:?}");
    }

    #[test]
    fn space_separated_lines() {
        check_spaces("3 be 1 up1", &["3", "be", "1", "up1"]);
        check_spaces("  a   b  ", &["a", "b"]);
        check_spaces("", &[]);
        check_spaces("a\tb", &["a", "b"]);
    }
}
