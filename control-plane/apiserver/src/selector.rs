//! Label and field selectors: the `labelSelector` and `fieldSelector` query parameters of
//! list and watch, and the structured `metav1.LabelSelector` of workload specs.
//!
//! Both follow Kubernetes's grammar and, where clients or people see them, its error
//! messages: kubectl users read these messages verbatim, and scripts written against a real
//! cluster must keep selecting the same objects here.
//!
//! - [`LabelSelector`]: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, and the
//!   integer comparisons `a>1`, `a<1`, all ANDed with commas.
//! - [`FieldSelector`]: `k=v`, `k==v`, `k!=v`, ANDed with commas, over the few field paths
//!   each resource supports ([`supported_fields`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::error::ApiError;

// ---------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------

/// The operator of one label [`Requirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`.
    Equals,
    /// `key==value` (same meaning as `=`; kept apart so the selector prints as written).
    DoubleEquals,
    /// `key!=value`: also true when the label is absent.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`: also true when the label is absent.
    NotIn,
    /// `key`: the label is present, with any value.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is present and is an integer greater than `n`.
    GreaterThan,
    /// `key<n`: the label is present and is an integer less than `n`.
    LessThan,
}

impl Operator {
    /// How the operator is spelled inside a selector string.
    fn symbol(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => "",
        }
    }
}

/// One condition of a label selector: a key, an operator and the operator's values.
///
/// Built only by [`LabelSelector::parse`] and [`LabelSelector::from_json`], which validate
/// the key and values as Kubernetes does; the values of `in`/`notin` parsed from a string
/// are sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// The label key (`app`, `app.kubernetes.io/name`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values: one for the equality and comparison operators, none for
    /// `Exists`/`DoesNotExist`, one or more for `In`/`NotIn`.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Whether the labels, seen through `get` (the value of a key, if present), satisfy
    /// this requirement.
    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                get(&self.key).is_some_and(|v| self.has_value(v))
            }
            Operator::NotEquals | Operator::NotIn => {
                get(&self.key).is_none_or(|v| !self.has_value(v))
            }
            Operator::Exists => get(&self.key).is_some(),
            Operator::DoesNotExist => get(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = get(&self.key).and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Kubernetes's canonical form: `!a`, `a`, `a=b`, `a in (x,y)` (set values sorted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        if matches!(self.operator, Operator::Exists | Operator::DoesNotExist) {
            return Ok(());
        }
        f.write_str(self.operator.symbol())?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: the AND of its [`Requirement`]s.
///
/// The empty selector (from `""`, or a structured selector with neither `matchLabels` nor
/// `matchExpressions`) selects everything; [`LabelSelector::nothing`] (a structured
/// selector that is `null`) selects nothing, as `metav1.LabelSelectorAsSelector` decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that selects every object.
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The selector that selects no object (what a `null` structured selector means).
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses a `labelSelector` query string.
    ///
    /// Grammar and messages are Kubernetes's (`k8s.io/apimachinery/pkg/labels`): on bad
    /// input a 400 `BadRequest` such as `unable to parse requirement: found 'b', expected:
    /// in, notin, =, ==, !=, gt, lt` or `unable to parse requirement: <nil>: Invalid value:
    /// "-a": name part must consist of …`. Keys must be qualified names (optional DNS
    /// subdomain prefix and `/`, then at most 63 characters), values valid label values.
    /// Requirements are kept sorted by key, so equal selectors compare and print equal.
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Parser::new(s).parse().map_err(ApiError::bad_request)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a structured `metav1.LabelSelector` (`matchLabels` and `matchExpressions`
    /// with the operators `In`, `NotIn`, `Exists`, `DoesNotExist`), such as a Deployment's
    /// `spec.selector`, with the meaning `metav1.LabelSelectorAsSelector` gives it: `null`
    /// selects nothing, `{}` everything.
    ///
    /// Errors (as text, for the caller to place in a validation cause or a printer cell)
    /// for an unknown operator (`"Foo" is not a valid label selector operator`), invalid
    /// keys or values, and JSON of the wrong shape.
    pub fn from_json(sel: &Value) -> Result<LabelSelector, String> {
        let map = match sel {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(map) => map,
            other => return Err(format!("label selector must be an object, not {other}")),
        };
        let mut requirements = Vec::new();
        match map.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let Some(v) = v.as_str() else {
                        return Err(format!("matchLabels.{k}: value must be a string"));
                    };
                    requirements.push(new_requirement(k, Operator::Equals, vec![v.to_string()])?);
                }
            }
            Some(_) => return Err("matchLabels must be an object".to_string()),
        }
        match map.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, expr) in exprs.iter().enumerate() {
                    requirements.push(expression_requirement(i, expr)?);
                }
            }
            Some(_) => return Err("matchExpressions must be a list".to_string()),
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(&|k: &str| labels.get(k).map(String::as_str))
    }

    /// Whether the labels of an object in Kubernetes JSON (`metadata.labels`) satisfy every
    /// requirement. A missing or malformed `metadata.labels` counts as no labels; a label
    /// whose value is not a string counts as absent.
    pub fn matches_value(&self, obj: &Value) -> bool {
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.matches_with(&|k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches_with(get))
    }

    /// Whether the selector selects everything (no requirement), so filtering can be
    /// skipped. False for [`LabelSelector::nothing`].
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether the selector selects nothing at all (a `null` structured selector).
    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// If the selector pins `key` to a single value (`key=v`, `key==v` or `key in (v)`),
    /// that value: lets a caller narrow a scan before matching.
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form, requirements joined by `,`; `""` for everything and
    /// for nothing (as Kubernetes prints them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One `matchExpressions` entry as a requirement.
fn expression_requirement(i: usize, expr: &Value) -> Result<Requirement, String> {
    let Some(expr) = expr.as_object() else {
        return Err(format!("matchExpressions[{i}] must be an object"));
    };
    let key = match expr.get("key") {
        None | Some(Value::Null) => "",
        Some(Value::String(k)) => k,
        Some(_) => return Err(format!("matchExpressions[{i}].key must be a string")),
    };
    let op = match expr.get("operator") {
        None | Some(Value::Null) => "",
        Some(Value::String(o)) => o,
        Some(_) => return Err(format!("matchExpressions[{i}].operator must be a string")),
    };
    let operator = match op {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(format!(
                "{} is not a valid label selector operator",
                go_quote(other)
            ))
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => {
            let mut out = Vec::with_capacity(vs.len());
            for v in vs {
                match v.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => return Err(format!("matchExpressions[{i}].values must be strings")),
                }
            }
            out
        }
        Some(_) => return Err(format!("matchExpressions[{i}].values must be a list")),
    };
    new_requirement(key, operator, values)
}

/// Builds a requirement, validating it as `labels.NewRequirement` does (with no field
/// path): the key, the number of values the operator takes, and every value. Several
/// failures are reported together as `[first, second]`.
fn new_requirement(
    key: &str,
    operator: Operator,
    values: Vec<String>,
) -> Result<Requirement, String> {
    let mut errs = Vec::new();
    if let Some(e) = validate_label_key(key, "key") {
        errs.push(e);
    }
    match operator {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errs.push(format!(
                    "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                    go_string_slice(&values)
                ));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                errs.push(format!(
                    "values: Invalid value: {}: exact-match compatibility requires one single value",
                    go_string_slice(&values)
                ));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                errs.push(format!(
                    "values: Invalid value: {}: values set must be empty for exists and does not exist",
                    go_string_slice(&values)
                ));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(format!(
                    "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                    go_string_slice(&values)
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(format!(
                        "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                        go_quote(v)
                    ));
                }
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let msgs = label_value_errors(v);
        if !msgs.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                go_quote(v),
                msgs.join("; ")
            ));
        }
    }
    match errs.len() {
        0 => Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        }),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

// --- validation of keys and values, with Kubernetes's messages -------------------------

const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: alphanumeric at both ends, `-_.` inside.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => alnum(f) && alnum(l) && b.iter().all(|c| alnum(c) || *c == b'-'),
            _ => false,
        }
    })
}

/// The messages `validation.IsQualifiedName` gives for a label key (none when valid).
fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > DNS1123_SUBDOMAIN_MAX {
                    errs.push(format!(
                        "prefix part must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
                    ));
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errs
}

/// The messages `validation.IsValidLabelValue` gives (none when valid).
fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > LABEL_VALUE_MAX {
        errs.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !v.is_empty() && !is_qualified_name_part(v) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// `<path>: Invalid value: "<key>": <reasons>` when `key` is not a valid label key.
fn validate_label_key(key: &str, path: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        None
    } else {
        Some(format!(
            "{path}: Invalid value: {}: {}",
            go_quote(key),
            errs.join("; ")
        ))
    }
}

/// A string quoted as Go's `%q` renders it (for messages users compare with Kubernetes's).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string list as Go's `%#v` renders a `[]string`: `[]string{"a", "b"}`.
fn go_string_slice(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

// --- the label selector parser ----------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosePar,
    Comma,
    Not,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// The token a literal spells, for the operators and keywords.
fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosePar,
        "," => Token::Comma,
        "!" => Token::Not,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens, ending with [`Token::End`]. Identifiers run to the next
/// whitespace or operator character; operators are the longest known spelling. All
/// split points are ASCII bytes, so slicing never splits a UTF-8 character.
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        let start = pos;
        if is_special(b[pos]) {
            let mut last: Option<(Token, usize)> = None;
            let mut end = pos;
            while end < b.len() && is_special(b[end]) {
                end += 1;
                match keyword(&s[start..end]) {
                    Some(t) => last = Some((t, end)),
                    None if last.is_some() => break,
                    None => {}
                }
            }
            match last {
                Some((t, e)) => {
                    out.push((t, s[start..e].to_string()));
                    pos = e;
                }
                None => {
                    out.push((
                        Token::Error,
                        format!("error expected: keyword found '{}'", &s[start..end]),
                    ));
                    pos = end;
                }
            }
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let lit = &s[start..pos];
            let tok = match lit {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            out.push((tok, lit.to_string()));
        }
    }
}

/// Where the parser is: `in`/`notin` are operators after a key, but plain identifiers where
/// keys and values are expected (`in in (in)` is a valid selector).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

/// A recursive-descent parser over the token list, with one token of lookahead.
struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Parser {
        Parser {
            items: lex(s),
            pos: 0,
        }
    }

    fn at(&self, i: usize, ctx: Ctx) -> (Token, &str) {
        // The list always ends with End; reading past it keeps returning End.
        let (tok, lit) = match self.items.get(i).or(self.items.last()) {
            Some((t, l)) => (*t, l.as_str()),
            None => (Token::End, ""),
        };
        match (ctx, tok) {
            (Ctx::Values, Token::In | Token::NotIn) => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn lookahead(&self, ctx: Ctx) -> (Token, String) {
        let (t, l) = self.at(self.pos, ctx);
        (t, l.to_string())
    }

    fn consume(&mut self, ctx: Ctx) -> (Token, String) {
        let (t, l) = self.at(self.pos, ctx);
        let out = (t, l.to_string());
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        out
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Token::Identifier | Token::Not => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Token::Identifier && t2 != Token::Not {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return new_requirement(&key, op, Vec::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(&key, operator, values.into_iter().collect())
    }

    /// The key, and `Exists`/`DoesNotExist` when no binary operator follows it.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Token::Not {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        if let Some(e) = validate_label_key(&lit, "<nil>") {
            return Err(e);
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Token::End || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        })
    }

    /// `(a,b,c)`; `()` is the set holding only the empty value.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                let (close, _) = self.consume(Ctx::Values);
                if close != Token::ClosePar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Token::ClosePar => {
                self.consume(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list of possibly empty values, up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit);
                    let (next, next_lit) = self.lookahead(Ctx::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosePar => return Ok(set),
                        _ => return Err(format!("found '{next_lit}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Ctx::Values);
                    if next == Token::ClosePar {
                        set.insert(String::new());
                        return Ok(set);
                    }
                    if next == Token::Comma {
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; empty when none follows.
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Token::End || tok == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------

/// One `field=value` or `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    negated: bool,
}

/// A parsed field selector: the AND of `field=value` (`==` too) and `field!=value` terms
/// over the field paths a resource supports. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses a `fieldSelector` query string, as `fields.ParseSelector` does, then checks
    /// each field against `supported` (the resource's [`supported_fields`]).
    ///
    /// Terms split at unescaped commas; each at the first `!=`, `==` or `=`. Values may
    /// escape `\,`, `\=` and `\\`; any other escape, or a bare `,`/`=` in a value, is
    /// invalid. Errors are 400 `BadRequest` in Kubernetes's words: `invalid selector:
    /// '<s>'; can't understand '<term>'`, `invalid field selector: invalid escape
    /// sequence: \x`, `invalid field selector: unescaped character in value: =`,
    /// `field label not supported: <key>`. Whitespace is not trimmed (as upstream).
    pub fn parse(s: &str, supported: &[&str]) -> Result<FieldSelector, ApiError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(rhs).map_err(ApiError::bad_request)?;
            terms.push(FieldTerm {
                field: field.to_string(),
                value,
                negated: op == "!=",
            });
        }
        if let Some(t) = terms
            .iter()
            .find(|t| !supported.contains(&t.field.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            )));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object (Kubernetes JSON) satisfies every term. Each field is read at its
    /// dotted path; strings compare as they are, booleans as `true`/`false`, numbers in
    /// decimal, and a missing field as `""` — except the fields Kubernetes always
    /// populates: `spec.unschedulable` and `spec.hostNetwork` (`false`),
    /// `status.replicas` (`0`). `status.podIP` reads `status.podIPs[0].ip` first, and an
    /// event's `source` falls back to `reportingComponent`, as Kubernetes's field sets do.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(obj, &t.field) == t.value) != t.negated)
    }

    /// Whether the selector selects everything (no term).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// If the selector pins `field` to one value with `=` or `==`, that value.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        let t = self.terms.iter().find(|t| t.field == field)?;
        (!t.negated).then_some(t.value.as_str())
    }

    /// If the selector pins `metadata.name=X`, X: the list can then be served like a GET
    /// of that one object (as `kubectl get pod X -w` asks).
    pub fn exact_name(&self) -> Option<&str> {
        self.requires_exact_match("metadata.name")
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical form: terms sorted, `field=value`/`field!=value`, values re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if t.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", t.field, escape_value(&t.value))?;
        }
        Ok(())
    }
}

/// Splits at commas not preceded by a backslash escape; escapes stay in the parts.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// `(field, operator, raw value)` split at the first operator occurrence.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

/// Removes the escapes `\\`, `\,`, `\=` from a value.
fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {c}"
                ))
            }
            c => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The value of a selectable field of an object, as the field selector compares it.
fn field_value(obj: &Value, field: &str) -> String {
    match field {
        "source" => {
            let component = scalar_at(obj, "source.component");
            if component.is_empty() {
                scalar_at(obj, "reportingComponent")
            } else {
                component
            }
        }
        "status.podIP" => {
            let first = obj
                .pointer("/status/podIPs/0/ip")
                .and_then(Value::as_str)
                .unwrap_or("");
            if first.is_empty() {
                scalar_at(obj, "status.podIP")
            } else {
                first.to_string()
            }
        }
        _ => match at_path(obj, field) {
            None | Some(Value::Null) => match field {
                "spec.unschedulable" | "spec.hostNetwork" => "false".to_string(),
                "status.replicas" => "0".to_string(),
                _ => String::new(),
            },
            Some(v) => render_scalar(v),
        },
    }
}

fn at_path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(obj, |v, seg| v.as_object().and_then(|m| m.get(seg)))
}

fn scalar_at(obj: &Value, dotted: &str) -> String {
    at_path(obj, dotted).map(render_scalar).unwrap_or_default()
}

fn render_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
    }
}

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const NODE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.phase"];
const SECRET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "type"];
const REPLICASET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];

/// The field paths a resource's field selectors may use, by (group, plural), as Kubernetes
/// registers them: every resource supports `metadata.name` and `metadata.namespace`; pods
/// add `spec.nodeName`, `spec.restartPolicy`, `spec.schedulerName`,
/// `spec.serviceAccountName`, `spec.hostNetwork`, `status.phase`, `status.podIP` and
/// `status.nominatedNodeName`; events the `involvedObject.*` fields, `reason`,
/// `reportingComponent`, `source` and `type`; nodes `spec.unschedulable`; namespaces
/// `status.phase`; secrets `type`; replicasets `status.replicas`. Anything else a client
/// asks for is refused by [`FieldSelector::parse`], so a typo never silently selects all.
pub fn supported_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => POD_FIELDS,
        ("", "events") => EVENT_FIELDS,
        ("", "nodes") => NODE_FIELDS,
        ("", "namespaces") => NAMESPACE_FIELDS,
        ("", "secrets") => SECRET_FIELDS,
        ("apps", "replicasets") => REPLICASET_FIELDS,
        _ => META_FIELDS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_err(s: &str) -> String {
        let e = LabelSelector::parse(s).unwrap_err();
        assert_eq!(e.code, 400, "{s}");
        assert_eq!(e.reason, "BadRequest", "{s}");
        e.message
    }

    #[test]
    fn empty_selector_selects_everything() {
        for s in ["", "   ", "\t"] {
            let sel = LabelSelector::parse(s).unwrap();
            assert!(sel.is_empty());
            assert!(sel.matches(&labels(&[])));
            assert!(sel.matches(&labels(&[("a", "b")])));
            assert_eq!(sel.to_string(), "");
        }
    }

    #[test]
    fn equality_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(LabelSelector::parse("app=web").unwrap().matches(&l));
        assert!(LabelSelector::parse("app==web").unwrap().matches(&l));
        assert!(!LabelSelector::parse("app=db").unwrap().matches(&l));
        assert!(LabelSelector::parse("app!=db").unwrap().matches(&l));
        assert!(!LabelSelector::parse("app!=web").unwrap().matches(&l));
        // != and notin also select objects without the label.
        assert!(LabelSelector::parse("missing!=x").unwrap().matches(&l));
        assert!(LabelSelector::parse("app=web,tier=front")
            .unwrap()
            .matches(&l));
        assert!(!LabelSelector::parse("app=web,tier=back")
            .unwrap()
            .matches(&l));
        // Whitespace around operators and commas is allowed.
        assert!(LabelSelector::parse(" app = web , tier == front ")
            .unwrap()
            .matches(&l));
        // `a=` means the empty value.
        let sel = LabelSelector::parse("a=").unwrap();
        assert_eq!(sel.requirements()[0].values(), &[String::new()]);
        assert!(sel.matches(&labels(&[("a", "")])));
        assert!(!sel.matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn set_and_existence_operators() {
        let l = labels(&[("env", "prod"), ("app", "web")]);
        assert!(LabelSelector::parse("env in (prod,staging)")
            .unwrap()
            .matches(&l));
        assert!(!LabelSelector::parse("env in (dev)").unwrap().matches(&l));
        assert!(!LabelSelector::parse("nope in (dev)").unwrap().matches(&l));
        assert!(LabelSelector::parse("env notin (dev,qa)")
            .unwrap()
            .matches(&l));
        assert!(!LabelSelector::parse("env notin (prod)")
            .unwrap()
            .matches(&l));
        assert!(LabelSelector::parse("nope notin (prod)")
            .unwrap()
            .matches(&l));
        assert!(LabelSelector::parse("env").unwrap().matches(&l));
        assert!(!LabelSelector::parse("nope").unwrap().matches(&l));
        assert!(LabelSelector::parse("!nope").unwrap().matches(&l));
        assert!(!LabelSelector::parse("!env").unwrap().matches(&l));
        assert!(LabelSelector::parse("env,!nope,app in (web)")
            .unwrap()
            .matches(&l));
    }

    #[test]
    fn upstream_example_with_empty_values() {
        // From the grammar's documentation: `x in (foo,,baz),y,z notin ()`.
        let sel = LabelSelector::parse("x in (foo,,baz),y,z notin ()").unwrap();
        let r = sel.requirements();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].key(), "x");
        assert_eq!(r[0].operator(), Operator::In);
        assert_eq!(r[0].values(), &["", "baz", "foo"]);
        assert_eq!(r[1].operator(), Operator::Exists);
        assert_eq!(r[2].operator(), Operator::NotIn);
        assert_eq!(r[2].values(), &[""]);
        assert!(sel.matches(&labels(&[("x", ""), ("y", "1")])));
        assert!(sel.matches(&labels(&[("x", "baz"), ("y", "1"), ("z", "q")])));
        assert!(!sel.matches(&labels(&[("x", "baz"), ("y", "1"), ("z", "")])));
        // Trailing and leading commas inside the set.
        let sel = LabelSelector::parse("a in (,b)").unwrap();
        assert_eq!(sel.requirements()[0].values(), &["", "b"]);
        let sel = LabelSelector::parse("a in (b,)").unwrap();
        assert_eq!(sel.requirements()[0].values(), &["", "b"]);
    }

    #[test]
    fn keywords_are_identifiers_where_values_go() {
        let sel = LabelSelector::parse("in in (in,notin)").unwrap();
        assert!(sel.matches(&labels(&[("in", "notin")])));
        let sel = LabelSelector::parse("notin=in").unwrap();
        assert!(sel.matches(&labels(&[("notin", "in")])));
    }

    #[test]
    fn integer_comparisons() {
        let l = labels(&[("gen", "5"), ("name", "x")]);
        assert!(LabelSelector::parse("gen>4").unwrap().matches(&l));
        assert!(!LabelSelector::parse("gen>5").unwrap().matches(&l));
        assert!(LabelSelector::parse("gen<6").unwrap().matches(&l));
        assert!(!LabelSelector::parse("name>1").unwrap().matches(&l));
        assert!(!LabelSelector::parse("missing<1").unwrap().matches(&l));
        assert_eq!(
            parse_err("gen>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn qualified_keys() {
        let sel = LabelSelector::parse("app.kubernetes.io/name=web").unwrap();
        assert!(sel.matches(&labels(&[("app.kubernetes.io/name", "web")])));
        let too_long = "a".repeat(64);
        assert_eq!(
            parse_err(&too_long),
            format!("unable to parse requirement: <nil>: Invalid value: \"{too_long}\": name part must be no more than 63 characters")
        );
        assert!(LabelSelector::parse(&"a".repeat(63)).is_ok());
        let msg = parse_err("Example.com/app=x");
        assert!(
            msg.starts_with("unable to parse requirement: <nil>: Invalid value: \"Example.com/app\": prefix part a lowercase RFC 1123 subdomain must consist of"),
            "{msg}"
        );
        assert!(parse_err("/app").contains("prefix part must be non-empty"));
        assert!(parse_err("a/b/c").contains("a qualified name must consist of"));
        let msg = parse_err("example.com/");
        assert!(
            msg.contains("name part must be non-empty; name part must consist of"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_errors_read_like_kubernetes() {
        assert_eq!(
            parse_err("-a"),
            "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            parse_err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            parse_err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            parse_err("a in (x"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_err("a in (x y)"),
            "unable to parse requirement: found 'y', expected: ',' or ')'"
        );
        assert_eq!(
            parse_err("a in (=)"),
            "unable to parse requirement: found '=', expected: ',', ')' or identifier"
        );
        assert_eq!(
            parse_err("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(parse_err("a,"), "found '', expected: identifier after ','");
        assert_eq!(
            parse_err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            parse_err("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_err("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(
            parse_err("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            parse_err("a=-b"),
            "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        // Longest operator spelling wins: `a===b` is `a==` then `=b`.
        assert_eq!(
            parse_err("a===b"),
            "unable to parse requirement: found '=', expected: identifier"
        );
        // Non-ASCII is carried through to the message, never split.
        let msg = parse_err("ключ=1");
        assert!(msg.contains("\"ключ\""), "{msg}");
    }

    #[test]
    fn canonical_string_form() {
        let sel = LabelSelector::parse("b in (y,x), a, !c, d!=1, e==2, f notin (z), g>3").unwrap();
        assert_eq!(sel.to_string(), "a,b in (x,y),!c,d!=1,e==2,f notin (z),g>3");
        assert_eq!(
            LabelSelector::parse(&sel.to_string()).unwrap(),
            sel,
            "the printed form parses back to the same selector"
        );
    }

    #[test]
    fn exact_match() {
        let sel = LabelSelector::parse("app=web,tier in (a),env in (x,y),x!=1").unwrap();
        assert_eq!(sel.requires_exact_match("app"), Some("web"));
        assert_eq!(sel.requires_exact_match("tier"), Some("a"));
        assert_eq!(sel.requires_exact_match("env"), None);
        assert_eq!(sel.requires_exact_match("x"), None);
        assert_eq!(sel.requires_exact_match("nope"), None);
    }

    #[test]
    fn matches_object_labels() {
        let sel = LabelSelector::parse("app=web,!canary").unwrap();
        assert!(sel.matches_value(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!sel.matches_value(&json!({"metadata": {"labels": {"app": "web", "canary": "1"}}})));
        assert!(!sel.matches_value(&json!({"metadata": {}})));
        // Malformed shapes never panic; non-string label values count as absent.
        for bad in [
            json!(null),
            json!("x"),
            json!([1, 2]),
            json!({"metadata": "x"}),
            json!({"metadata": {"labels": ["app"]}}),
            json!({"metadata": {"labels": {"app": 5}}}),
        ] {
            assert!(!sel.matches_value(&bad), "{bad}");
        }
        assert!(LabelSelector::parse("!app")
            .unwrap()
            .matches_value(&json!(null)));
    }

    #[test]
    fn structured_selectors() {
        let sel = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert_eq!(
            sel.to_string(),
            "app=web,!canary,env notin (dev),team,tier in (edge,front)"
        );
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "edge"), ("team", "a")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("team", "a"),
            ("canary", "y")
        ])));

        let everything = LabelSelector::from_json(&json!({})).unwrap();
        assert!(everything.is_empty());
        assert!(everything.matches(&labels(&[])));
        let nothing = LabelSelector::from_json(&Value::Null).unwrap();
        assert!(nothing.matches_nothing());
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(&labels(&[])));
        assert!(!nothing.matches_value(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert_eq!(nothing.to_string(), "");
    }

    #[test]
    fn structured_selector_errors() {
        assert_eq!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]})
            )
            .unwrap_err(),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}))
                .unwrap_err(),
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]}))
                .unwrap_err(),
            "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
        );
        let e = LabelSelector::from_json(&json!({"matchLabels": {"bad key": "-v"}})).unwrap_err();
        assert!(
            e.starts_with("[key: Invalid value: \"bad key\": name part must consist of"),
            "{e}"
        );
        assert!(
            e.contains(", values[0][bad key]: Invalid value: \"-v\": a valid label"),
            "{e}"
        );
        for bad in [
            json!("app=web"),
            json!({"matchLabels": ["a"]}),
            json!({"matchLabels": {"a": 1}}),
            json!({"matchExpressions": {"key": "a"}}),
            json!({"matchExpressions": ["a"]}),
            json!({"matchExpressions": [{"key": 1, "operator": "Exists"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}),
            json!({"matchExpressions": [{"operator": "Exists"}]}),
        ] {
            assert!(LabelSelector::from_json(&bad).is_err(), "{bad}");
        }
    }

    fn fparse(s: &str) -> Result<FieldSelector, ApiError> {
        FieldSelector::parse(s, supported_fields("", "pods"))
    }

    #[test]
    fn field_selector_parses_and_matches() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "podIP": "10.0.0.5"}
        });
        let sel = fparse("spec.nodeName=n1,status.phase!=Succeeded").unwrap();
        assert!(sel.matches(&pod));
        assert!(fparse("status.phase==Running").unwrap().matches(&pod));
        assert!(!fparse("status.phase=Pending").unwrap().matches(&pod));
        assert!(fparse("status.podIP=10.0.0.5").unwrap().matches(&pod));
        // Missing fields are "": an unscheduled pod has spec.nodeName="".
        assert!(fparse("status.nominatedNodeName=").unwrap().matches(&pod));
        assert!(fparse("spec.schedulerName!=x").unwrap().matches(&pod));
        assert!(fparse("spec.hostNetwork=false").unwrap().matches(&pod));
        assert!(fparse("metadata.namespace=default,metadata.name=web-1")
            .unwrap()
            .matches(&pod));
        // Garbage objects never panic.
        for bad in [
            json!(null),
            json!(3),
            json!({"spec": "x"}),
            json!({"status": {"podIPs": "x"}}),
        ] {
            assert!(fparse("spec.nodeName=").unwrap().matches(&bad), "{bad}");
            assert!(!fparse("spec.nodeName=n1").unwrap().matches(&bad), "{bad}");
        }
    }

    #[test]
    fn field_selector_empty_and_display() {
        for s in ["", ",", ",,"] {
            let sel = fparse(s).unwrap();
            assert!(sel.is_empty());
            assert!(sel.matches(&json!({})));
        }
        let sel = fparse("status.phase!=Running,metadata.name=a\\,b").unwrap();
        assert_eq!(sel.to_string(), "metadata.name=a\\,b,status.phase!=Running");
        assert_eq!(
            FieldSelector::parse(&sel.to_string(), supported_fields("", "pods")).unwrap(),
            sel
        );
    }

    #[test]
    fn field_selector_escapes() {
        let sel = fparse("metadata.name=a\\,b\\=c\\\\d").unwrap();
        assert!(sel.matches(&json!({"metadata": {"name": "a,b=c\\d"}})));
        assert_eq!(sel.exact_name(), Some("a,b=c\\d"));
        let e = fparse("metadata.name=a\\x").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert_eq!(
            fparse("metadata.name=a\\").unwrap_err().message,
            "invalid field selector: invalid escape sequence: \\"
        );
        assert_eq!(
            fparse("metadata.name=a=b").unwrap_err().message,
            "invalid field selector: unescaped character in value: ="
        );
        // `!=` splits first: `a!==b` is field `a`, operator `!=`, value `=b` (invalid).
        assert_eq!(
            fparse("metadata.name!==b").unwrap_err().message,
            "invalid field selector: unescaped character in value: ="
        );
    }

    #[test]
    fn field_selector_errors() {
        let e = fparse("metadata.name").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.reason, "BadRequest");
        assert_eq!(
            e.message,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        let e = fparse("spec.foo=bar").unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.foo");
        // Whitespace is not trimmed, as upstream.
        assert_eq!(
            fparse("metadata.name =x").unwrap_err().message,
            "field label not supported: metadata.name "
        );
        // Fields another resource supports are refused here.
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x", supported_fields("apps", "deployments"))
                .unwrap_err()
                .message,
            "field label not supported: spec.nodeName"
        );
    }

    #[test]
    fn exact_name_fast_path() {
        assert_eq!(
            fparse("metadata.name=web").unwrap().exact_name(),
            Some("web")
        );
        assert_eq!(
            fparse("status.phase=Running,metadata.name==web")
                .unwrap()
                .exact_name(),
            Some("web")
        );
        assert_eq!(fparse("metadata.name!=web").unwrap().exact_name(), None);
        assert_eq!(fparse("status.phase=Running").unwrap().exact_name(), None);
        assert_eq!(fparse("").unwrap().exact_name(), None);
    }

    #[test]
    fn field_selectors_for_events_nodes_and_replicasets() {
        let ev = json!({
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "reason": "BackOff",
            "type": "Warning",
            "reportingComponent": "kubelet"
        });
        let ev_fields = supported_fields("", "events");
        let sel = FieldSelector::parse(
            "involvedObject.kind=Pod,involvedObject.name=web,type=Warning,reason=BackOff",
            ev_fields,
        )
        .unwrap();
        assert!(sel.matches(&ev));
        // `source` falls back to the reporting controller.
        assert!(FieldSelector::parse("source=kubelet", ev_fields)
            .unwrap()
            .matches(&ev));
        let mut ev2 = ev.clone();
        ev2["source"] = json!({"component": "scheduler"});
        assert!(FieldSelector::parse("source=scheduler", ev_fields)
            .unwrap()
            .matches(&ev2));

        let nodes = supported_fields("", "nodes");
        let cordoned = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        let plain = json!({"metadata": {"name": "n2"}, "spec": {}});
        let sel = FieldSelector::parse("spec.unschedulable=true", nodes).unwrap();
        assert!(sel.matches(&cordoned));
        assert!(!sel.matches(&plain));
        let sel = FieldSelector::parse("spec.unschedulable=false", nodes).unwrap();
        assert!(
            sel.matches(&plain),
            "a missing bool is false, as Kubernetes sets it"
        );
        assert!(!sel.matches(&cordoned));

        let rs = supported_fields("apps", "replicasets");
        let sel = FieldSelector::parse("status.replicas=0", rs).unwrap();
        assert!(sel.matches(&json!({"status": {}})));
        assert!(!sel.matches(&json!({"status": {"replicas": 3}})));
        assert!(FieldSelector::parse("status.replicas!=0", rs)
            .unwrap()
            .matches(&json!({"status": {"replicas": 3}})));
    }

    #[test]
    fn supported_fields_per_resource() {
        for (g, p) in [
            ("", "configmaps"),
            ("apps", "deployments"),
            ("coordination.k8s.io", "leases"),
        ] {
            assert_eq!(
                supported_fields(g, p),
                &["metadata.name", "metadata.namespace"]
            );
        }
        assert!(supported_fields("", "pods").contains(&"spec.nodeName"));
        assert!(supported_fields("", "pods").contains(&"status.podIP"));
        assert!(supported_fields("", "events").contains(&"involvedObject.uid"));
        assert!(supported_fields("", "nodes").contains(&"spec.unschedulable"));
        assert!(supported_fields("", "namespaces").contains(&"status.phase"));
        assert!(supported_fields("", "secrets").contains(&"type"));
        assert!(supported_fields("apps", "replicasets").contains(&"status.replicas"));
        assert!(!supported_fields("", "replicasets").contains(&"status.replicas"));
        for (g, p) in [("", "pods"), ("", "events"), ("", "nodes"), ("", "secrets")] {
            let f = supported_fields(g, p);
            assert!(f.contains(&"metadata.name") && f.contains(&"metadata.namespace"));
        }
    }
}
