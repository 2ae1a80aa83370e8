//! A hand-written parser for Octostache's grammar.
//!
//! Octostache parses with Sprache, a backtracking combinator library: at every `#{` it tries a
//! conditional, then a calculation, then a loop, then a plain substitution, and keeps the first
//! that parses. That order has visible consequences this parser keeps: an unclosed
//! `#{if X}...` is not an error but a substitution of a variable named `if X` (which is then left
//! as written); `#{ }` does not parse at all; `#{Sign in page}` does not parse because ` in `
//! is a keyword.
//!
//! Backtracking over nested blocks is exponential in the worst case, so failures of the
//! recursive rules are memoised by position, nesting is capped, and a work budget proportional
//! to the input bounds the rest. Positions are byte offsets that always sit on character
//! boundaries; every slice goes through `str::get`, so no input can make the parser panic.

use std::collections::HashMap;

use crate::ast::{
    Branch, CalcFactor, CalcOperator, CalcProduct, CalcSum, Comparison, Condition, Conditional,
    ConditionalKind, Expression, Filter, Index, Operand, Repetition, Step, Symbol, Template, Token,
};

/// How a top-level template treats a `#{` that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The whole template fails to parse (Octostache's default, `haltOnError: true`).
    Strict,
    /// The unparseable text is kept literally and parsing goes on after it
    /// (Octostache's `haltOnError: false`, used when substituting into files).
    ContinueOnErrors,
}

/// Why a template did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// Character (not byte) offset of the furthest point the parser reached.
    pub(crate) position: usize,
    pub(crate) message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Rule {
    Conditional,
    Calculation,
    Repetition,
    Substitution,
    StringIndexer,
}

/// Where a template body stops, besides at a token that does not parse.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Never,
    /// An `#{if}` or `#{elseif}` body ends at `#{else}` or `#{elseif `.
    IfBody,
    /// An `#{unless}` body ends at `#{else}` (`#{elseif}` is not supported there).
    UnlessBody,
}

/// Work units allowed per byte of input, on top of a fixed allowance. A template whose blocks
/// are all closed costs about one unit per byte; only unclosed blocks, which make the parser
/// rescan what follows them, come near this.
const WORK_PER_BYTE: usize = 256;
const WORK_ALLOWANCE: usize = 1_000_000;

/// Parses a whole template.
pub(crate) fn parse_template(
    source: &str,
    mode: Mode,
    max_nesting: usize,
) -> Result<Template, ParseError> {
    let mut parser = Parser::new(source, max_nesting);
    let tokens = match mode {
        Mode::Strict => {
            let (tokens, end) = parser.template(0, Stop::Never);
            if parser.nesting_exceeded {
                return Err(parser.error_at(
                    parser.furthest,
                    format!("blocks and expressions nest deeper than {max_nesting} levels"),
                ));
            }
            if end < source.len() {
                return Err(parser.syntax_error());
            }
            tokens
        }
        Mode::ContinueOnErrors => parser.continue_on_errors(),
    };
    if parser.work_exceeded {
        return Err(parser.error_at(
            parser.furthest,
            "the template is too complex to parse".to_owned(),
        ));
    }
    Ok(tokens)
}

/// Parses the longest symbol at the start of `name`, ignoring whatever follows it, as
/// Octostache does when it binds variable names (so `A,B` binds as `A`).
pub(crate) fn parse_symbol_prefix(name: &str, max_nesting: usize) -> Option<Symbol> {
    let mut parser = Parser::new(name, max_nesting);
    parser.symbol(0).map(|(symbol, _)| symbol)
}

struct Parser<'a> {
    source: &'a str,
    depth: usize,
    max_nesting: usize,
    /// The furthest byte offset any attempt reached before failing (Sprache's "best error").
    furthest: usize,
    /// Set when a failure was caused by a limit rather than by the input; such failures depend
    /// on where the attempt started, so they are never memoised.
    tainted: bool,
    nesting_exceeded: bool,
    work: usize,
    max_work: usize,
    work_exceeded: bool,
    failures: HashMap<(Rule, usize), usize>,
}

impl<'a> Parser<'a> {
    fn new(source: &'a str, max_nesting: usize) -> Parser<'a> {
        Parser {
            source,
            depth: 0,
            max_nesting,
            furthest: 0,
            tainted: false,
            nesting_exceeded: false,
            work: 0,
            max_work: source
                .len()
                .saturating_mul(WORK_PER_BYTE)
                .saturating_add(WORK_ALLOWANCE),
            work_exceeded: false,
            failures: HashMap::new(),
        }
    }

    // ----- Low-level helpers -------------------------------------------------------------------

    fn char_at(&self, position: usize) -> Option<char> {
        self.source.get(position..)?.chars().next()
    }

    fn starts_with(&self, position: usize, literal: &str) -> bool {
        self.source
            .get(position..)
            .is_some_and(|rest| rest.starts_with(literal))
    }

    /// Records a failure at `position` and returns `None`.
    fn fail<T>(&mut self, position: usize) -> Option<T> {
        self.furthest = self.furthest.max(position);
        None
    }

    /// Spends work units; returns `false` (and poisons the parse) once the budget is gone.
    fn spend(&mut self, units: usize) -> bool {
        self.work = self.work.saturating_add(units);
        if self.work > self.max_work {
            self.work_exceeded = true;
            self.tainted = true;
            return false;
        }
        true
    }

    fn skip_whitespace(&self, mut position: usize) -> usize {
        while let Some(character) = self.char_at(position) {
            if !character.is_whitespace() {
                break;
            }
            position += character.len_utf8();
        }
        position
    }

    /// Skips at least one whitespace character.
    fn skip_whitespace1(&mut self, position: usize) -> Option<usize> {
        let end = self.skip_whitespace(position);
        if end == position {
            return self.fail(position);
        }
        Some(end)
    }

    fn expect_char(&mut self, position: usize, expected: char) -> Option<usize> {
        if self.char_at(position) == Some(expected) {
            Some(position + expected.len_utf8())
        } else {
            self.fail(position)
        }
    }

    fn expect_literal(&mut self, position: usize, literal: &str) -> Option<usize> {
        if self.starts_with(position, literal) {
            Some(position + literal.len())
        } else {
            self.fail(position)
        }
    }

    /// Matches an ASCII keyword ignoring case, as Sprache's `Parse.IgnoreCase` does.
    fn keyword(&mut self, position: usize, keyword: &str) -> Option<usize> {
        let end = position + keyword.len();
        match self.source.get(position..end) {
            Some(found) if found.eq_ignore_ascii_case(keyword) => Some(end),
            _ => self.fail(position),
        }
    }

    /// `#{` that does not start a closing tag `#{/`.
    fn open_delimiter(&mut self, position: usize) -> Option<usize> {
        if self.starts_with(position, "#{") && !self.starts_with(position, "#{/") {
            Some(position + 2)
        } else {
            self.fail(position)
        }
    }

    /// Runs a recursive rule, remembering a failure at this position so it is never retried.
    fn memo<T>(
        &mut self,
        rule: Rule,
        position: usize,
        attempt: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        if let Some(&reached) = self.failures.get(&(rule, position)) {
            self.furthest = self.furthest.max(reached);
            return None;
        }
        let outer_furthest = self.furthest;
        let outer_tainted = self.tainted;
        self.furthest = position;
        self.tainted = false;
        let result = attempt(self);
        let reached = self.furthest;
        let tainted = self.tainted;
        self.furthest = outer_furthest.max(reached);
        self.tainted = outer_tainted || tainted;
        if result.is_none() && !tainted {
            self.failures.insert((rule, position), reached);
        }
        result
    }

    /// Runs a rule one nesting level deeper, failing once the nesting limit is reached.
    fn nested<T>(&mut self, attempt: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.depth >= self.max_nesting {
            // Not `tainted`: remembering this failure by position alone is what keeps a run of
            // unclosed blocks past the cap linear (it was quadratic up to the work budget, about
            // 7 s per 100 KB of `#{if a}`). The price is only paid by templates with more blocks
            // open at once than the cap: a block that failed there is not tried again when
            // backtracking reaches it less deeply, so it stays text.
            self.nesting_exceeded = true;
            return None;
        }
        self.depth += 1;
        let result = attempt(self);
        self.depth -= 1;
        result
    }

    fn error_at(&self, position: usize, message: String) -> ParseError {
        let clamped = position.min(self.source.len());
        let position = self
            .source
            .get(..clamped)
            .map_or(0, |prefix| prefix.chars().count());
        ParseError { position, message }
    }

    fn syntax_error(&self) -> ParseError {
        let message = match self.char_at(self.furthest) {
            None => "unexpected end of template (is a `#{` or a block left unclosed?)".to_owned(),
            Some(character) => format!("unexpected `{character}`"),
        };
        self.error_at(self.furthest, message)
    }

    // ----- Templates and tokens ----------------------------------------------------------------

    fn template(&mut self, mut position: usize, stop: Stop) -> (Vec<Token>, usize) {
        let mut tokens = Vec::new();
        while position < self.source.len() {
            let stops_here = match stop {
                Stop::Never => false,
                Stop::IfBody => self.starts_with(position, "#{else}") || self.is_elseif(position),
                Stop::UnlessBody => self.starts_with(position, "#{else}"),
            };
            if stops_here {
                break;
            }
            match self.token(position) {
                Some((token, end)) => {
                    tokens.push(token);
                    position = end;
                }
                None => break,
            }
        }
        (tokens, position)
    }

    /// Octostache's `ContinueMany`: a token that does not parse becomes literal text up to the
    /// furthest point the failed attempt reached, and parsing resumes there.
    fn continue_on_errors(&mut self) -> Vec<Token> {
        let mut tokens = Vec::new();
        let mut position = 0;
        while position < self.source.len() && !self.work_exceeded {
            self.furthest = position;
            match self.token(position) {
                Some((token, end)) => {
                    tokens.push(token);
                    position = end;
                }
                None => {
                    let next_char = self.char_at(position).map_or(1, char::len_utf8);
                    let mut end = self
                        .furthest
                        .max(position + next_char)
                        .min(self.source.len());
                    while !self.source.is_char_boundary(end) {
                        end += 1;
                    }
                    let text = self.source.get(position..end).unwrap_or_default();
                    tokens.push(Token::Text(text.to_owned()));
                    position = end;
                }
            }
        }
        tokens
    }

    fn is_elseif(&self, position: usize) -> bool {
        self.starts_with(position, "#{elseif")
            && self
                .char_at(position + "#{elseif".len())
                .is_some_and(char::is_whitespace)
    }

    fn token(&mut self, position: usize) -> Option<(Token, usize)> {
        if !self.spend(1) {
            return None;
        }
        if self.starts_with(position, "#{") && !self.starts_with(position, "#{/") {
            if let Some(found) = self.block_or_substitution(position) {
                return Some(found);
            }
            // Literal text cannot start with `#{` either; Sprache's text parser fails one
            // character in, which is where its error points.
            return self.fail(position + 1);
        }
        self.text(position)
            .map(|(text, end)| (Token::Text(text), end))
    }

    /// The four ways a `#{` can start a token, in Octostache's order.
    fn block_or_substitution(&mut self, position: usize) -> Option<(Token, usize)> {
        if let Some(found) = self.conditional(position) {
            return Some(found);
        }
        if let Some(found) = self.calculation(position) {
            return Some(found);
        }
        if let Some(found) = self.repetition(position) {
            return Some(found);
        }
        self.substitution(position)
            .map(|(expression, end)| (Token::Substitution(expression), end))
    }

    /// Literal text. `##{` is an escaped `#{`; `###{x}` is a `#` then a token; other `#`s are
    /// literal.
    fn text(&mut self, start: usize) -> Option<(String, usize)> {
        let mut text = String::new();
        let mut position = start;
        while let Some(character) = self.char_at(position) {
            if character != '#' {
                text.push(character);
                position += character.len_utf8();
                continue;
            }
            let next = position + 1;
            match self.char_at(next) {
                None => {
                    text.push('#');
                    position = next;
                }
                Some('#') => {
                    // Sprache's look-ahead for `#{` needs a character after it to succeed.
                    if self.starts_with(position + 2, "#{") && self.source.len() > position + 4 {
                        text.push('#');
                        position += 2;
                    } else if self.starts_with(position + 2, "{") {
                        text.push_str("#{");
                        position += 3;
                    } else {
                        text.push_str("##");
                        position += 2;
                    }
                }
                Some('{') => {
                    self.furthest = self.furthest.max(next);
                    break;
                }
                Some(other) => {
                    text.push('#');
                    text.push(other);
                    position = next + other.len_utf8();
                }
            }
        }
        if !self.spend(position - start) || position == start {
            return self.fail(start);
        }
        Some((text, position))
    }

    // ----- Substitutions, expressions and symbols ---------------------------------------------

    fn substitution(&mut self, position: usize) -> Option<(Expression, usize)> {
        self.memo(Rule::Substitution, position, |parser| {
            parser.nested(|parser| {
                let inside = parser.open_delimiter(position)?;
                let inside = parser.skip_whitespace(inside);
                let (expression, end) = parser.expression(inside)?;
                let end = parser.skip_whitespace(end);
                let end = parser.expect_char(end, '}')?;
                Some((expression, end))
            })
        })
    }

    /// A filter chain, or failing that a bare symbol.
    fn expression(&mut self, position: usize) -> Option<(Expression, usize)> {
        let (symbol, after_symbol) = match self.symbol(position) {
            Some((symbol, end)) => (Some(symbol), end),
            None => (None, position),
        };
        let mut filters = Vec::new();
        let mut position = self.skip_whitespace(after_symbol);
        loop {
            if self.char_at(position) != Some('|') {
                self.fail::<()>(position);
                break;
            }
            let name_start = self.skip_whitespace(position + 1);
            let Some((name, name_end)) = self.identifier(name_start, false) else {
                break;
            };
            let mut option_position = self.skip_whitespace(name_end);
            let mut options = Vec::new();
            while let Some((option, end)) = self.filter_option(option_position) {
                options.push(option);
                option_position = end;
            }
            filters.push(Filter { name, options });
            position = option_position;
        }
        if !filters.is_empty() {
            return Some((Expression { symbol, filters }, position));
        }
        let symbol = symbol?;
        Some((
            Expression {
                symbol: Some(symbol),
                filters,
            },
            after_symbol,
        ))
    }

    /// One filter option: a nested token (no surrounding whitespace is skipped, which is why
    /// Octostache cannot chain another filter after `#{x} `), or a bare word or quoted string
    /// (which do skip whitespace around them).
    fn filter_option(&mut self, position: usize) -> Option<(Token, usize)> {
        if self.starts_with(position, "#{")
            && !self.starts_with(position, "#{/")
            && let Some(found) = self.block_or_substitution(position)
        {
            return Some(found);
        }
        let start = self.skip_whitespace(position);
        if let Some((word, end)) = self.identifier(start, false) {
            return Some((Token::Text(word), self.skip_whitespace(end)));
        }
        let (text, end) = self.quoted_text(start)?;
        Some((Token::Text(text), self.skip_whitespace(end)))
    }

    /// `"text"` (which may not contain `"` or `#`) or `\"text\"` (which may contain anything).
    fn quoted_text(&mut self, position: usize) -> Option<(String, usize)> {
        if self.char_at(position) == Some('"') {
            let content_start = position + 1;
            let mut end = content_start;
            while let Some(character) = self.char_at(end) {
                if character == '"' || character == '#' {
                    break;
                }
                end += character.len_utf8();
            }
            if self.char_at(end) == Some('"') {
                let content = self.source.get(content_start..end).unwrap_or_default();
                return Some((content.to_owned(), end + 1));
            }
            return self.fail(end);
        }
        if self.starts_with(position, "\\\"") {
            let content_start = position + 2;
            let rest = self.source.get(content_start..).unwrap_or_default();
            if let Some(length) = rest.find("\\\"") {
                let content = rest.get(..length).unwrap_or_default();
                return Some((content.to_owned(), content_start + length + 2));
            }
            return self.fail(self.source.len());
        }
        self.fail(position)
    }

    fn is_identifier_char(character: char, allow_whitespace: bool) -> bool {
        character.is_alphabetic()
            || character.is_numeric()
            || matches!(character, '_' | '-' | ':' | '/' | '~' | '(' | ')' | '@')
            || (allow_whitespace && character.is_whitespace())
    }

    /// An identifier, trimmed. With whitespace allowed, a whitespace character is refused when
    /// it comes right before `|` or `}`, or before a keyword (`in`, `==`, `!=`) that is itself
    /// followed by whitespace: that is how `#{each a in B}` and `#{if A == B}` split.
    fn identifier(&mut self, start: usize, allow_whitespace: bool) -> Option<(String, usize)> {
        let mut position = start;
        while let Some(character) = self.char_at(position) {
            if !Self::is_identifier_char(character, allow_whitespace) {
                break;
            }
            let next = position + character.len_utf8();
            if character.is_whitespace() {
                if matches!(self.char_at(next), Some('|' | '}')) {
                    break;
                }
                let before_keyword = ["in", "==", "!="].iter().any(|keyword| {
                    self.starts_with(next, keyword)
                        && self
                            .char_at(next + keyword.len())
                            .is_some_and(char::is_whitespace)
                });
                if before_keyword {
                    break;
                }
            }
            position = next;
        }
        if position == start {
            return self.fail(start);
        }
        let text = self.source.get(start..position).unwrap_or_default();
        Some((text.trim().to_owned(), position))
    }

    fn symbol(&mut self, start: usize) -> Option<(Symbol, usize)> {
        let (first, mut position) = self.identifier(start, true)?;
        let mut steps = vec![Step::Identifier(first)];
        loop {
            match self.char_at(position) {
                Some('.') => match self.identifier(position + 1, true) {
                    Some((name, end)) => {
                        steps.push(Step::Identifier(name));
                        position = end;
                    }
                    None => break,
                },
                Some('[') => match self.indexer(position) {
                    Some((index, end)) => {
                        steps.push(Step::Index(index));
                        position = end;
                    }
                    None => break,
                },
                _ => {
                    self.fail::<()>(position);
                    break;
                }
            }
            if !self.spend(1) {
                return None;
            }
        }
        Some((
            Symbol {
                steps,
                position: start,
            },
            position,
        ))
    }

    /// `[#{Symbol}]`, or failing that a literal index (which may itself contain brackets).
    fn indexer(&mut self, position: usize) -> Option<(Index, usize)> {
        self.nested(|parser| {
            let inside = parser.skip_whitespace(position + 1);
            if let Some((expression, end)) = parser.substitution(inside)
                && expression.filters.is_empty()
                && let Some(symbol) = expression.symbol
            {
                let end = parser.skip_whitespace(end);
                if parser.char_at(end) == Some(']') {
                    return Some((Index::Symbol(symbol), end + 1));
                }
                parser.fail::<()>(end);
            }
            parser
                .string_indexer(position)
                .map(|(text, end)| (Index::Literal(text), end))
        })
    }

    /// `[text]` where the text may contain balanced `[...]`; leading whitespace is dropped.
    fn string_indexer(&mut self, position: usize) -> Option<(String, usize)> {
        self.memo(Rule::StringIndexer, position, |parser| {
            parser.nested(|parser| {
                let mut cursor = parser.expect_char(position, '[')?;
                cursor = parser.skip_whitespace(cursor);
                let mut text = String::new();
                loop {
                    match parser.char_at(cursor) {
                        Some(']') => return Some((text, cursor + 1)),
                        Some('[') => {
                            let (inner, end) = parser.string_indexer(cursor)?;
                            text.push('[');
                            text.push_str(&inner);
                            text.push(']');
                            cursor = end;
                        }
                        Some(character) => {
                            text.push(character);
                            cursor += character.len_utf8();
                        }
                        None => return parser.fail(cursor),
                    }
                }
            })
        })
    }

    // ----- Blocks ------------------------------------------------------------------------------

    fn conditional(&mut self, position: usize) -> Option<(Token, usize)> {
        self.memo(Rule::Conditional, position, |parser| {
            parser.nested(|parser| parser.conditional_inner(position))
        })
    }

    fn conditional_inner(&mut self, position: usize) -> Option<(Token, usize)> {
        let cursor = self.open_delimiter(position)?;
        let cursor = self.skip_whitespace(cursor);
        let (kind, cursor) = if let Some(end) = self.keyword(cursor, "if") {
            (ConditionalKind::If, end)
        } else {
            (ConditionalKind::Unless, self.keyword(cursor, "unless")?)
        };
        let cursor = self.skip_whitespace1(cursor)?;
        let (condition, cursor) = self.condition(cursor)?;
        let cursor = self.skip_whitespace(cursor);
        let cursor = self.expect_char(cursor, '}')?;
        let body_stop = match kind {
            ConditionalKind::If => Stop::IfBody,
            ConditionalKind::Unless => Stop::UnlessBody,
        };
        let (body, mut cursor) = self.template(cursor, body_stop);
        let mut branches = vec![Branch { condition, body }];
        if kind == ConditionalKind::If {
            while self.is_elseif(cursor) {
                let Some((branch, end)) = self.elseif(cursor) else {
                    break;
                };
                branches.push(branch);
                cursor = end;
            }
        }
        let mut otherwise = Vec::new();
        if self.starts_with(cursor, "#{else}") {
            let (tokens, end) = self.template(cursor + "#{else}".len(), Stop::Never);
            otherwise = tokens;
            cursor = end;
        }
        let closing = match kind {
            ConditionalKind::If => "#{/if}",
            ConditionalKind::Unless => "#{/unless}",
        };
        let cursor = self.expect_literal(cursor, closing)?;
        let conditional = Conditional {
            kind,
            branches,
            otherwise,
        };
        Some((Token::Conditional(Box::new(conditional)), cursor))
    }

    fn elseif(&mut self, position: usize) -> Option<(Branch, usize)> {
        let cursor = position + "#{elseif".len();
        // Exactly one whitespace character belongs to the delimiter; the condition skips more.
        let cursor = cursor + self.char_at(cursor).map_or(0, char::len_utf8);
        let (condition, cursor) = self.condition(cursor)?;
        let cursor = self.skip_whitespace(cursor);
        let cursor = self.expect_char(cursor, '}')?;
        let (body, cursor) = self.template(cursor, Stop::IfBody);
        Some((Branch { condition, body }, cursor))
    }

    /// `A == B`, `"text" == A`, `A == "text"` or `A`, tried in that order.
    fn condition(&mut self, position: usize) -> Option<(Condition, usize)> {
        let start = self.skip_whitespace(position);
        let left = self.expression(start);
        if let Some((left_expression, left_end)) = &left {
            let operator_start = self.skip_whitespace(*left_end);
            if let Some((equal, operator_end)) = self.comparison_operator(operator_start) {
                let right_start = self.skip_whitespace(operator_end);
                if let Some((right, end)) = self.expression(right_start) {
                    let condition = Condition {
                        left: left_expression.clone(),
                        comparison: Some(Comparison {
                            equal,
                            right: Operand::Expression(right),
                        }),
                    };
                    return Some((condition, self.skip_whitespace(end)));
                }
            }
        }
        if let Some((text, text_end)) = self.quoted_text(start) {
            let operator_start = self.skip_whitespace(text_end);
            if let Some((equal, operator_end)) = self.comparison_operator(operator_start) {
                let right_start = self.skip_whitespace(operator_end);
                if let Some((expression, end)) = self.expression(right_start) {
                    let condition = Condition {
                        left: expression,
                        comparison: Some(Comparison {
                            equal,
                            right: Operand::Text(text),
                        }),
                    };
                    return Some((condition, self.skip_whitespace(end)));
                }
            }
        }
        let (left, left_end) = left?;
        let operator_start = self.skip_whitespace(left_end);
        if let Some((equal, operator_end)) = self.comparison_operator(operator_start) {
            let text_start = self.skip_whitespace(operator_end);
            if let Some((text, end)) = self.quoted_text(text_start) {
                let condition = Condition {
                    left,
                    comparison: Some(Comparison {
                        equal,
                        right: Operand::Text(text),
                    }),
                };
                return Some((condition, self.skip_whitespace(end)));
            }
        }
        let condition = Condition {
            left,
            comparison: None,
        };
        Some((condition, self.skip_whitespace(left_end)))
    }

    fn comparison_operator(&mut self, position: usize) -> Option<(bool, usize)> {
        if self.starts_with(position, "==") {
            Some((true, position + 2))
        } else if self.starts_with(position, "!=") {
            Some((false, position + 2))
        } else {
            self.fail(position)
        }
    }

    fn repetition(&mut self, position: usize) -> Option<(Token, usize)> {
        self.memo(Rule::Repetition, position, |parser| {
            parser.nested(|parser| {
                let cursor = parser.open_delimiter(position)?;
                let cursor = parser.skip_whitespace(cursor);
                let cursor = parser.keyword(cursor, "each")?;
                let cursor = parser.skip_whitespace1(cursor)?;
                let (enumerator, cursor) = parser.identifier(cursor, true)?;
                let cursor = parser.skip_whitespace(cursor);
                let cursor = parser.keyword(cursor, "in")?;
                let cursor = parser.skip_whitespace(cursor);
                let (collection, cursor) = parser.symbol(cursor)?;
                let cursor = parser.skip_whitespace(cursor);
                let cursor = parser.expect_char(cursor, '}')?;
                let (body, cursor) = parser.template(cursor, Stop::Never);
                let cursor = parser.expect_literal(cursor, "#{/each}")?;
                let repetition = Repetition {
                    enumerator,
                    collection,
                    body,
                };
                Some((Token::Repetition(Box::new(repetition)), cursor))
            })
        })
    }

    // ----- Calculations ------------------------------------------------------------------------

    fn calculation(&mut self, position: usize) -> Option<(Token, usize)> {
        self.memo(Rule::Calculation, position, |parser| {
            parser.nested(|parser| {
                let cursor = parser.open_delimiter(position)?;
                let cursor = parser.skip_whitespace(cursor);
                let cursor = parser.keyword(cursor, "calc")?;
                let cursor = parser.skip_whitespace1(cursor)?;
                let (sum, cursor) = parser.calc_sum(cursor)?;
                let cursor = parser.skip_whitespace(cursor);
                let cursor = parser.expect_char(cursor, '}')?;
                Some((Token::Calculation(Box::new(sum)), cursor))
            })
        })
    }

    /// An operator with optional whitespace around it.
    fn calc_operator(
        &mut self,
        position: usize,
        accepted: [char; 2],
    ) -> Option<(CalcOperator, usize)> {
        let cursor = self.skip_whitespace(position);
        let operator = match self.char_at(cursor) {
            Some('+') if accepted.contains(&'+') => CalcOperator::Add,
            Some('-') if accepted.contains(&'-') => CalcOperator::Subtract,
            Some('*') if accepted.contains(&'*') => CalcOperator::Multiply,
            Some('/') if accepted.contains(&'/') => CalcOperator::Divide,
            _ => return self.fail(cursor),
        };
        Some((operator, self.skip_whitespace(cursor + 1)))
    }

    fn calc_sum(&mut self, position: usize) -> Option<(CalcSum, usize)> {
        let (first, mut cursor) = self.calc_product(position)?;
        let mut rest = Vec::new();
        // Like Sprache's ChainOperator: an operator not followed by an operand is not consumed.
        while let Some((operator, operand_start)) = self.calc_operator(cursor, ['+', '-']) {
            let Some((product, end)) = self.calc_product(operand_start) else {
                break;
            };
            rest.push((operator, product));
            cursor = end;
            if !self.spend(1) {
                return None;
            }
        }
        Some((CalcSum { first, rest }, cursor))
    }

    fn calc_product(&mut self, position: usize) -> Option<(CalcProduct, usize)> {
        let (first, mut cursor) = self.calc_factor(position)?;
        let mut rest = Vec::new();
        while let Some((operator, operand_start)) = self.calc_operator(cursor, ['*', '/']) {
            let Some((factor, end)) = self.calc_factor(operand_start) else {
                break;
            };
            rest.push((operator, factor));
            cursor = end;
            if !self.spend(1) {
                return None;
            }
        }
        Some((CalcProduct { first, rest }, cursor))
    }

    /// `( sum )`, a number, `{Variable}` or `Variable`. Once `(`, a digit or `{` has been read
    /// there is no going back (Sprache's `XOr`), so `2.` or `(B)` fail outright.
    fn calc_factor(&mut self, position: usize) -> Option<(CalcFactor, usize)> {
        match self.char_at(position) {
            Some('(') => self.nested(|parser| {
                let (sum, cursor) = parser.calc_sum(position + 1)?;
                let cursor = parser.expect_char(cursor, ')')?;
                Some((CalcFactor::Group(Box::new(sum)), cursor))
            }),
            Some(character) if character.is_ascii_digit() || character == '.' => {
                self.calc_constant(position)
            }
            Some('{') => {
                let cursor = self.skip_whitespace(position + 1);
                let (symbol, cursor) = self.symbol(cursor)?;
                let cursor = self.skip_whitespace(cursor);
                let cursor = self.expect_char(cursor, '}')?;
                Some((CalcFactor::Variable(symbol), cursor))
            }
            _ => {
                let cursor = self.skip_whitespace(position);
                let (symbol, cursor) = self.symbol(cursor)?;
                Some((CalcFactor::Variable(symbol), self.skip_whitespace(cursor)))
            }
        }
    }

    /// `digits`, `digits.digits` or `.digits`.
    fn calc_constant(&mut self, position: usize) -> Option<(CalcFactor, usize)> {
        let digits_end = |parser: &Self, mut cursor: usize| {
            while parser.char_at(cursor).is_some_and(|c| c.is_ascii_digit()) {
                cursor += 1;
            }
            cursor
        };
        let integer_end = digits_end(self, position);
        let mut end = integer_end;
        if self.char_at(integer_end) == Some('.') {
            let fraction_end = digits_end(self, integer_end + 1);
            if fraction_end == integer_end + 1 {
                return self.fail(fraction_end);
            }
            end = fraction_end;
        } else if integer_end == position {
            return self.fail(position);
        }
        let text = self.source.get(position..end).unwrap_or_default();
        let value = text.parse::<f64>().ok()?;
        Some((CalcFactor::Constant(value), end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(source: &str) -> Result<Template, ParseError> {
        parse_template(source, Mode::Strict, 64)
    }

    fn round_trip(source: &str) -> String {
        match strict(source) {
            Ok(tokens) => tokens.iter().map(ToString::to_string).collect(),
            Err(error) => panic!("{source:?} did not parse: {error:?}"),
        }
    }

    #[test]
    fn substitutions_are_printed_back_in_canonical_form() {
        assert_eq!(round_trip("#{ Foo }"), "#{Foo}");
        assert_eq!(round_trip("#{Foo|ToUpper}"), "#{Foo | ToUpper}");
        assert_eq!(round_trip("#{A[#{B}].C}"), "#{A[#{B}].C}");
        assert_eq!(
            round_trip("#{Foo | Replace a \"b c\"}"),
            "#{Foo | Replace \"a\" \"b c\"}"
        );
        assert_eq!(round_trip("a ##{x} b"), "a ##{x} b");
    }

    #[test]
    fn elseif_chains_print_as_nested_ifs() {
        assert_eq!(
            round_trip("#{if First}first#{elseif Second}second#{else}else#{/if}"),
            "#{if First}first#{else}#{if Second}second#{else}else#{/if}#{/if}"
        );
        assert_eq!(
            round_trip("#{unless A}x#{else}y#{/unless}"),
            "#{if A}y#{else}x#{/if}"
        );
    }

    #[test]
    fn an_unclosed_if_parses_as_a_substitution_of_a_variable_named_if() {
        let tokens = strict("#{if X}abc").unwrap_or_default();
        assert!(matches!(tokens.first(), Some(Token::Substitution(_))));
        assert_eq!(round_trip("#{if X}abc"), "#{if X}abc");
    }

    #[test]
    fn an_unclosed_substitution_is_a_parse_error_at_the_end() {
        let error = strict("ab #{Foo").err();
        assert_eq!(error.map(|error| error.position), Some(8));
    }

    #[test]
    fn continuing_on_errors_keeps_the_unparsable_text() {
        let tokens = parse_template("#{Foo #{Bar}", Mode::ContinueOnErrors, 64).unwrap_or_default();
        let printed: String = tokens.iter().map(ToString::to_string).collect();
        assert_eq!(printed, "##{Foo #{Bar}");
    }

    #[test]
    fn deep_nesting_is_refused_rather_than_overflowing_the_stack() {
        let source = "#{if a}".repeat(200) + &"#{/if}".repeat(200);
        let error = strict(&source).err().map(|error| error.message);
        assert!(error.is_some_and(|message| message.contains("nest deeper")));
    }

    #[test]
    fn many_unclosed_blocks_parse_in_bounded_time() {
        let source = "#{if a == \"b\"}x".repeat(3_000);
        // Either outcome is fine; what matters is that this returns.
        let _outcome = parse_template(&source, Mode::ContinueOnErrors, 64);
    }

    #[test]
    fn unclosed_blocks_past_the_nesting_cap_stay_text() {
        for unit in ["#{if a}", "#{unless a}y", "#{if a}x"] {
            let source = unit.repeat(3_000);
            let tokens = parse_template(&source, Mode::ContinueOnErrors, 64).unwrap();
            // Every one is a substitution of a variable named after the whole tag, as in
            // Octostache, and nothing else.
            assert!(
                tokens
                    .iter()
                    .all(|token| matches!(token, Token::Substitution(_) | Token::Text(_))),
                "{unit}"
            );
        }
    }

    #[test]
    fn binding_names_parse_as_their_longest_symbol_prefix() {
        let symbol = parse_symbol_prefix("A,B", 64).map(|symbol| symbol.to_string());
        assert_eq!(symbol.as_deref(), Some("A"));
        let symbol = parse_symbol_prefix("Octopus.Action[Package[0].Name].Value", 64)
            .map(|symbol| symbol.to_string());
        assert_eq!(
            symbol.as_deref(),
            Some("Octopus.Action[Package[0].Name].Value")
        );
    }
}
