//! Octopus Deploy's variable substitution syntax ("Octostache"), for Cuttle.
//!
//! Step properties, scripts and files reference variables as `#{Name}`. This crate parses and
//! evaluates that syntax as Octopus's own library does, so a deployment process written for
//! Octopus renders the same text here. It does no IO and has no async runtime, so both the
//! worker and the agent link it.
//!
//! ```
//! use cuttle_template::VariableDictionary;
//!
//! let mut variables = VariableDictionary::new();
//! variables.set("Server", "Web01");
//! variables.set("Url", "http://#{Server | ToLower}:#{Port}");
//! assert_eq!(variables.evaluate("#{Url}/api").unwrap(), "http://web01:#{Port}/api");
//! ```
//!
//! # What is supported
//!
//! * Substitution `#{Name}`: names ignore case and may hold letters, digits, whitespace and
//!   `_ - : / ~ ( ) @`; `.` separates steps and `[...]` indexes (`#{Servers[Web].Port}`,
//!   `#{A[#{B}]}`, `#{Octopus.Action[*].Name}` for any one index). `##{x}` is a literal `#{x}`.
//!   An unknown variable is left as written, in Octostache's canonical form (`#{ Foo }` is
//!   left as `#{Foo}`).
//! * Values are templates too: a value containing `#{B}` is evaluated, in the scope where it
//!   was found. A value that does not parse is used as it is. A cycle (`A` → `B` → `A`) is a
//!   [`TemplateError::RecursiveDefinition`] naming the chain.
//! * JSON values: `#{Config.Name}`, `#{Config[0]}`, `#{each item in Config}` (objects give
//!   `#{item.Key}`/`#{item.Value}`). JSON is read leniently (unquoted names, single quotes,
//!   comments), a missing property is empty, and a dictionary entry always wins over JSON.
//! * Filters, names ignoring case: `ToLower`, `ToUpper`, `Trim [start|end]`, `Substring
//!   [start] length`, `Truncate length [suffix]`, `Indent [n|/n|m/n|text [text]]`,
//!   `Append ...`, `Prepend ...`, `StartsWith`, `EndsWith`, `Contains`, `Match regex`,
//!   `Replace regex [replacement]`, `ToBase64 [utf8|unicode]` (alias `Base64`, a Cuttle
//!   addition), `FromBase64 [utf8|unicode]`, `HtmlEscape`, `XmlEscape`, `JsonEscape`,
//!   `YamlSingleQuoteEscape`, `YamlDoubleQuoteEscape`, `PropertiesKeyEscape`,
//!   `PropertiesValueEscape`, `UriEscape`, `UriDataEscape`, `Format [type] format`, `NowDate
//!   [format]`, `NowDateUtc [format]`, `AddHours n`, `AddDays n`, and `Markdown` /
//!   `MarkdownToHtml`, which pass the text through unchanged (Cuttle has no Markdown renderer).
//!   Options are bare words, `"quoted"` (no `#` inside), `\"escaped quoted\"` or nested
//!   `#{...}`. A filter that cannot apply, or an unknown filter, leaves the expression as
//!   written, as Octostache does.
//! * `#{if X}…#{elseif Y}…#{else}…#{/if}`, `#{unless X}…#{else}…#{/unless}`, with `==` / `!=`
//!   against a quoted string or another expression (ordinal, case-sensitive). Unknown is
//!   falsy; see [`is_truthy`].
//! * `#{each item in List}…#{/each}` over indexed variables, JSON arrays and objects, or the
//!   comma-separated parts of a value, with `Octopus.Template.Each.Index`, `.First` and
//!   `.Last`.
//! * `#{calc A + 2 * (B - 1)}`, with `{Var}` for names that contain `-` or `/`; an unknown or
//!   non-numeric operand leaves it as written (Octostache drops the `calc` keyword then).
//!
//! # What is not
//!
//! * Filters `UriPart`, `VersionMajor` and the other `Version*` filters, `Md5`, `Sha1`,
//!   `Sha256`, `Sha384`, `Sha512` and `Null`: unknown here, so left as written.
//! * Custom numeric formats with an exponent (`0.0E+0`); standard and other custom formats
//!   work. Formatting follows the invariant culture (`¤` for currency, `MM/dd/yyyy`).
//! * .NET regular-expression features regex-lite lacks (look-around, back-references).
//! * Lengths are counted in Unicode characters, where .NET counts UTF-16 code units.
//!
//! Where Octostache throws (invalid Base64, an invalid regex, a name with an `[#{...}]`
//! index), Cuttle leaves the expression as written or ignores the name instead.
//!
//! # Fuzzing
//!
//! `libs/template/fuzz` is a cargo-fuzz project outside the workspace; see
//! `libs/template/README.md`. The test `tests/random_templates.rs` runs thousands of generated
//! templates in the normal suite.

mod ast;
mod binding;
mod date;
mod dictionary;
mod eval;
mod filters;
mod json;
mod number;
mod parser;

use std::fmt;

pub use dictionary::VariableDictionary;

/// Why a template could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template is not valid Octostache (strict evaluation only).
    #[error("the template does not parse at character {position}: {message}")]
    Parse {
        /// Character offset (not byte offset) of the furthest point the parser reached.
        position: usize,
        /// What was wrong there.
        message: String,
    },
    /// A variable's value refers back to itself, directly or through others.
    #[error(
        "An attempt to parse the variable symbol \"{variable}\" appears to have resulted in a self referencing loop ({}). Ensure that recursive loops do not exist in the variable values.",
        chain.join(" -> ")
    )]
    RecursiveDefinition {
        /// The variable met a second time.
        variable: String,
        /// The variables being resolved, outermost first, ending with `variable` again.
        chain: Vec<String>,
    },
    /// Variables expand into variables more deeply than the limit allows.
    #[error("evaluating \"{variable}\" nests more than {limit} levels deep")]
    TooDeep {
        /// The variable whose expansion went too deep.
        variable: String,
        /// The limit that was reached.
        limit: usize,
    },
    /// Evaluation did too much work or produced too much text.
    #[error("the template exceeds the limit of {limit} {kind}")]
    LimitExceeded {
        /// Which limit.
        kind: LimitKind,
        /// Its value.
        limit: usize,
    },
}

/// The metered resources of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Evaluation steps (tokens, lookups, filter applications, loop iterations).
    Steps,
    /// Bytes of output, or of any intermediate value.
    OutputBytes,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            LimitKind::Steps => "evaluation steps",
            LimitKind::OutputBytes => "output bytes",
        })
    }
}

/// Bounds on the work one evaluation may do, so that no template or variable set can hang or
/// exhaust a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How many variable values may be expanded inside one another (`A` → `B` → `C` is 3).
    pub max_depth: usize,
    /// How deeply blocks and expressions may nest in one template.
    pub max_nesting: usize,
    /// Evaluation steps (tokens, lookups, filter applications, loop iterations, and one per
    /// 256 bytes of text produced).
    pub max_steps: usize,
    /// Bytes of output, and of any intermediate value.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 32,
            max_nesting: 64,
            max_steps: 5_000_000,
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The result of an evaluation, with what could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The evaluated text.
    pub output: String,
    /// The tokens left as written (unknown variables, filters that could not apply), each
    /// once, in order of appearance, as Octostache reports them.
    pub unresolved: Vec<String>,
}

/// Octostache's truthiness: false for `""`, `"0"`, and `no`/`false` in any case with
/// surrounding whitespace; true for anything else. (Only `no`/`false` are trimmed: `" 0"` is
/// true, as in Octostache.)
pub fn is_truthy(value: &str) -> bool {
    let trimmed = value.trim();
    !(value.is_empty()
        || value == "0"
        || trimmed.eq_ignore_ascii_case("no")
        || trimmed.eq_ignore_ascii_case("false"))
}
