//! The parsed form of a template, and its canonical text.
//!
//! Octostache writes an expression it cannot evaluate back out in a canonical form (`#{ Foo }`
//! becomes `#{Foo}`, filter options gain quotes, `#{unless}` is written as an inverted `#{if}`),
//! so the `Display` implementations here reproduce that form exactly: what a user sees for an
//! unresolved token is part of the compatibility surface.
//!
//! Every sequence that user input can make long (`elseif` chains, filter chains, `calc` operator
//! chains) is a flat `Vec`, never a nested chain, so evaluating, printing and dropping a parsed
//! template never recurses deeper than the parser's nesting limit.

use std::fmt::{self, Display, Formatter, Write};

use crate::number::format_double_general;

/// A parsed template: a sequence of tokens.
pub(crate) type Template = Vec<Token>;

/// One piece of a template.
#[derive(Clone, Debug)]
pub(crate) enum Token {
    /// Literal text, already unescaped (`##{` has become `#{`).
    Text(String),
    /// `#{Expression}`.
    Substitution(Expression),
    /// `#{if}`/`#{unless}` with its branches.
    Conditional(Box<Conditional>),
    /// `#{each item in Collection}`.
    Repetition(Box<Repetition>),
    /// `#{calc ...}`.
    Calculation(Box<CalcSum>),
}

/// A symbol followed by zero or more filters, `Name | Filter option | Filter`.
#[derive(Clone, Debug)]
pub(crate) struct Expression {
    /// `None` for a filter chain with nothing on its left, such as `#{ | NowDate}`.
    pub(crate) symbol: Option<Symbol>,
    pub(crate) filters: Vec<Filter>,
}

/// One `| Name options` filter application.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    pub(crate) name: String,
    pub(crate) options: Vec<Token>,
}

/// A dotted, indexed variable path such as `Octopus.Action[Step A].Name`.
#[derive(Clone, Debug)]
pub(crate) struct Symbol {
    pub(crate) steps: Vec<Step>,
    /// Byte offset of the symbol in the text it was parsed from. Octostache's recursion check
    /// compares symbols by text *and* position, which decides how far a self-referencing JSON
    /// value resolves before the loop is detected, so evaluation keeps the position too.
    pub(crate) position: usize,
}

/// One step of a symbol.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Identifier(String),
    Index(Index),
}

/// The inside of `[...]`.
#[derive(Clone, Debug)]
pub(crate) enum Index {
    Literal(String),
    /// `[#{Other}]`: the index is the value of another variable.
    Symbol(Symbol),
}

/// Whether a conditional block is an `#{if}` or an `#{unless}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConditionalKind {
    If,
    Unless,
}

/// `#{if A}..#{elseif B}..#{else}..#{/if}` or `#{unless A}..#{else}..#{/unless}`.
#[derive(Clone, Debug)]
pub(crate) struct Conditional {
    pub(crate) kind: ConditionalKind,
    /// The `if` branch then any `elseif` branches; exactly one branch for `unless`.
    pub(crate) branches: Vec<Branch>,
    /// The `#{else}` body, empty when there is none.
    pub(crate) otherwise: Vec<Token>,
}

/// A condition and the body it guards.
#[derive(Clone, Debug)]
pub(crate) struct Branch {
    pub(crate) condition: Condition,
    pub(crate) body: Vec<Token>,
}

/// `Left`, `Left == Right` or `Left != "text"`.
#[derive(Clone, Debug)]
pub(crate) struct Condition {
    pub(crate) left: Expression,
    pub(crate) comparison: Option<Comparison>,
}

/// The `== right` or `!= right` part of a condition.
#[derive(Clone, Debug)]
pub(crate) struct Comparison {
    pub(crate) equal: bool,
    pub(crate) right: Operand,
}

/// The right-hand side of a comparison.
#[derive(Clone, Debug)]
pub(crate) enum Operand {
    /// A quoted string; a string written on the left is moved here, as Octostache does.
    Text(String),
    Expression(Expression),
}

/// `#{each enumerator in collection}body#{/each}`.
#[derive(Clone, Debug)]
pub(crate) struct Repetition {
    pub(crate) enumerator: String,
    pub(crate) collection: Symbol,
    pub(crate) body: Vec<Token>,
}

/// An additive `calc` expression: `first (+|-) product ...`.
#[derive(Clone, Debug)]
pub(crate) struct CalcSum {
    pub(crate) first: CalcProduct,
    pub(crate) rest: Vec<(CalcOperator, CalcProduct)>,
}

/// A multiplicative `calc` expression: `first (*|/) factor ...`.
#[derive(Clone, Debug)]
pub(crate) struct CalcProduct {
    pub(crate) first: CalcFactor,
    pub(crate) rest: Vec<(CalcOperator, CalcFactor)>,
}

/// A number, a variable or a parenthesised sum.
#[derive(Clone, Debug)]
pub(crate) enum CalcFactor {
    Constant(f64),
    Variable(Symbol),
    Group(Box<CalcSum>),
}

/// The four arithmetic operators of `calc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CalcOperator {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// Writes literal text the way Octostache's text token does: `#{` is escaped back to `##{`.
fn write_text(formatter: &mut Formatter<'_>, text: &str) -> fmt::Result {
    formatter.write_str(&text.replace("#{", "##{"))
}

fn write_tokens(formatter: &mut Formatter<'_>, tokens: &[Token]) -> fmt::Result {
    tokens.iter().try_for_each(|token| token.fmt(formatter))
}

impl Display for Token {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Token::Text(text) => write_text(formatter, text),
            Token::Substitution(expression) => write!(formatter, "#{{{expression}}}"),
            Token::Conditional(conditional) => conditional.write_from(formatter, 0),
            Token::Repetition(repetition) => {
                write!(
                    formatter,
                    "#{{each {} in {}}}",
                    repetition.enumerator, repetition.collection
                )?;
                write_tokens(formatter, &repetition.body)?;
                formatter.write_str("#{/each}")
            }
            // Octostache drops the `calc` keyword when it echoes an unevaluable calculation.
            Token::Calculation(sum) => write!(formatter, "#{{{sum}}}"),
        }
    }
}

impl Conditional {
    /// Writes the conditional as Octostache prints it, starting at branch `first`: an `elseif`
    /// chain is printed as the nested `#{if}`s it is sugar for, and `#{unless}` as an `#{if}`
    /// with its branches swapped.
    pub(crate) fn write_from(&self, formatter: &mut Formatter<'_>, first: usize) -> fmt::Result {
        if self.kind == ConditionalKind::Unless {
            let Some(branch) = self.branches.first() else {
                return Ok(());
            };
            write!(formatter, "#{{if {}}}", branch.condition)?;
            write_tokens(formatter, &self.otherwise)?;
            if !branch.body.is_empty() {
                formatter.write_str("#{else}")?;
                write_tokens(formatter, &branch.body)?;
            }
            return formatter.write_str("#{/if}");
        }
        let branches = self.branches.get(first..).unwrap_or_default();
        for (position, branch) in branches.iter().enumerate() {
            write!(formatter, "#{{if {}}}", branch.condition)?;
            write_tokens(formatter, &branch.body)?;
            let is_last = position + 1 == branches.len();
            if !is_last || !self.otherwise.is_empty() {
                formatter.write_str("#{else}")?;
            }
        }
        write_tokens(formatter, &self.otherwise)?;
        for _ in branches {
            formatter.write_str("#{/if}")?;
        }
        Ok(())
    }
}

/// Prints a conditional from a given branch on, for echoing an `elseif` that cannot be evaluated.
pub(crate) struct ConditionalFrom<'a>(pub(crate) &'a Conditional, pub(crate) usize);

impl Display for ConditionalFrom<'_> {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        self.0.write_from(formatter, self.1)
    }
}

impl Display for Condition {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.left)?;
        if let Some(comparison) = &self.comparison {
            let operator = if comparison.equal { "==" } else { "!=" };
            match &comparison.right {
                Operand::Text(text) => write!(formatter, " {operator} \"{text}\" ")?,
                Operand::Expression(expression) => write!(formatter, " {operator} {expression} ")?,
            }
        }
        Ok(())
    }
}

impl Display for Expression {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        if let Some(symbol) = &self.symbol {
            write!(formatter, "{symbol}")?;
        }
        for filter in &self.filters {
            write!(formatter, " | {}", filter.name)?;
            for option in &filter.options {
                formatter.write_char(' ')?;
                match option {
                    // Octostache quotes literal options when it prints a filter back out.
                    Token::Text(text) => {
                        formatter.write_char('"')?;
                        write_text(formatter, text)?;
                        formatter.write_char('"')?;
                    }
                    other => write!(formatter, "{other}")?,
                }
            }
        }
        Ok(())
    }
}

impl Display for Symbol {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        for (position, step) in self.steps.iter().enumerate() {
            match step {
                Step::Identifier(name) => {
                    if position > 0 {
                        formatter.write_char('.')?;
                    }
                    formatter.write_str(name)?;
                }
                Step::Index(Index::Literal(index)) => write!(formatter, "[{index}]")?,
                Step::Index(Index::Symbol(symbol)) => write!(formatter, "[#{{{symbol}}}]")?,
            }
        }
        Ok(())
    }
}

impl Display for CalcOperator {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            CalcOperator::Add => "+",
            CalcOperator::Subtract => "-",
            CalcOperator::Multiply => "*",
            CalcOperator::Divide => "/",
        })
    }
}

// Octostache prints calculations without spaces or parentheses (`(B*2)-2` echoes as `B*2-2`).
impl Display for CalcSum {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.first)?;
        for (operator, product) in &self.rest {
            write!(formatter, "{operator}{product}")?;
        }
        Ok(())
    }
}

impl Display for CalcProduct {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.first)?;
        for (operator, factor) in &self.rest {
            write!(formatter, "{operator}{factor}")?;
        }
        Ok(())
    }
}

impl Display for CalcFactor {
    fn fmt(&self, formatter: &mut Formatter<'_>) -> fmt::Result {
        match self {
            CalcFactor::Constant(value) => formatter.write_str(&format_double_general(*value)),
            CalcFactor::Variable(symbol) => write!(formatter, "{symbol}"),
            CalcFactor::Group(sum) => write!(formatter, "{sum}"),
        }
    }
}
