//! Evaluation of a parsed template against the variable tree.
//!
//! Resolution follows Octostache's `EvaluationContext`: a symbol is walked step by step through
//! the innermost scope (an `#{each}` loop's locals) and, if any step is missing there, walked
//! again from the next scope out, ending at the variables. A missing dotted or indexed step may
//! also be found inside a JSON value. A value that contains `#{` is itself evaluated, in the
//! scope where it was found. A symbol met again while it is still being resolved is a
//! recursive definition, which is an error, never a stack overflow. As in Octostache, "the
//! same symbol" means the same text at the same position of its template, so a value may
//! refer to itself once through a different spelling before the loop is reported.
//!
//! All work is metered: steps, output size, nested expansions and recursion depth each have a
//! limit, so a hostile template or variable set ends with an error rather than a hang.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::ast::{
    CalcFactor, CalcOperator, CalcProduct, CalcSum, Comparison, Condition, Conditional,
    ConditionalFrom, ConditionalKind, Expression, Index, Operand, Repetition, Step, Symbol,
    Template, Token,
};
use crate::binding::{Binding, PathStep, bind, fold_case};
use crate::filters::{self, FilterContext};
use crate::number::{format_double_general, parse_double};
use crate::parser::{Mode, parse_template};
use crate::{LimitKind, Limits, TemplateError, is_truthy};

/// How deep evaluation may recurse in total (nested blocks, index lookups and variable
/// expansions together). Each level costs a few kilobytes of stack at most, so this stays far
/// below the 2 MiB of a test thread.
const MAX_EVALUATION_NESTING: usize = 192;

/// Handling this many bytes of text costs one evaluation step.
const BYTES_PER_STEP: usize = 256;

/// One level of variable scope: an `#{each}` loop's locals, or the variables themselves.
pub(crate) struct Scope<'s> {
    binding: Arc<Binding>,
    parent: Option<&'s Scope<'s>>,
}

impl Scope<'_> {
    /// The outermost scope, holding the variables.
    pub(crate) fn root(binding: Arc<Binding>) -> Scope<'static> {
        Scope {
            binding,
            parent: None,
        }
    }
}

/// A symbol step after its indexers have been looked up where possible.
enum ResolvedStep<'t> {
    Name(&'t str),
    /// A literal or looked-up index; `None` when the index variable has no value.
    Key(Option<String>),
    /// `[#{Other}]` that could not be looked up yet; it is retried in outer scopes.
    Pending(&'t Symbol),
}

/// The outcome of walking a symbol through one scope.
enum Walk {
    Found(Arc<Binding>),
    /// A step is missing here; the symbol may still be found in an outer scope.
    NotFound,
    /// An index could not be resolved at all: the symbol is unresolvable.
    Abort,
}

pub(crate) struct Evaluator {
    limits: Limits,
    /// Lenient evaluation treats a recursive or too-deep reference as unresolved.
    lenient: bool,
    filter_context: FilterContext,
    /// Symbols being resolved (case-folded text and position), innermost last, for recursion
    /// detection.
    resolving: Vec<(String, usize)>,
    /// The same symbols as written, for error messages.
    resolving_as_written: Vec<String>,
    expansions: usize,
    nesting: usize,
    steps: usize,
    parse_cache: HashMap<String, Option<Rc<Template>>>,
    /// Tokens left as written because they could not be evaluated, in order, with repeats.
    pub(crate) unresolved: Vec<String>,
}

impl Evaluator {
    pub(crate) fn new(limits: Limits, lenient: bool, filter_context: FilterContext) -> Evaluator {
        Evaluator {
            limits,
            lenient,
            filter_context,
            resolving: Vec::new(),
            resolving_as_written: Vec::new(),
            expansions: 0,
            nesting: 0,
            steps: 0,
            parse_cache: HashMap::new(),
            unresolved: Vec::new(),
        }
    }

    /// Evaluates a top-level template.
    pub(crate) fn evaluate(
        &mut self,
        template: &[Token],
        scope: &Scope<'_>,
    ) -> Result<String, TemplateError> {
        let mut output = String::new();
        self.tokens(template, scope, &mut output)?;
        Ok(output)
    }

    // ----- Metering ----------------------------------------------------------------------------

    fn tick(&mut self) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > self.limits.max_steps {
            return Err(TemplateError::LimitExceeded {
                kind: LimitKind::Steps,
                limit: self.limits.max_steps,
            });
        }
        Ok(())
    }

    fn check_size(&self, length: usize) -> Result<(), TemplateError> {
        if length > self.limits.max_output_bytes {
            return Err(TemplateError::LimitExceeded {
                kind: LimitKind::OutputBytes,
                limit: self.limits.max_output_bytes,
            });
        }
        Ok(())
    }

    /// Charges for handling `length` bytes of text, so that copying large values around is
    /// metered like any other work.
    fn charge_bytes(&mut self, length: usize) -> Result<(), TemplateError> {
        self.steps = self.steps.saturating_add(length / BYTES_PER_STEP);
        self.tick()
    }

    fn write(&mut self, output: &mut String, text: &str) -> Result<(), TemplateError> {
        self.check_size(output.len().saturating_add(text.len()))?;
        self.charge_bytes(text.len())?;
        output.push_str(text);
        Ok(())
    }

    /// The variable whose expansion is innermost, for error messages.
    fn current_variable(&self) -> String {
        self.resolving_as_written
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// Runs `work` one evaluation level deeper.
    fn deeper<T>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, TemplateError>,
    ) -> Result<T, TemplateError> {
        if self.nesting >= MAX_EVALUATION_NESTING {
            return Err(TemplateError::TooDeep {
                variable: self.current_variable(),
                limit: MAX_EVALUATION_NESTING,
            });
        }
        self.nesting += 1;
        let result = work(self);
        self.nesting -= 1;
        result
    }

    // ----- Tokens ------------------------------------------------------------------------------

    fn tokens(
        &mut self,
        tokens: &[Token],
        scope: &Scope<'_>,
        output: &mut String,
    ) -> Result<(), TemplateError> {
        self.deeper(|evaluator| {
            tokens
                .iter()
                .try_for_each(|token| evaluator.token(token, scope, output))
        })
    }

    /// Leaves a token as written and records it as unresolved.
    fn echo(&mut self, text: String, output: &mut String) -> Result<(), TemplateError> {
        self.write(output, &text)?;
        self.unresolved.push(text);
        Ok(())
    }

    fn token(
        &mut self,
        token: &Token,
        scope: &Scope<'_>,
        output: &mut String,
    ) -> Result<(), TemplateError> {
        self.tick()?;
        match token {
            Token::Text(text) => self.write(output, text),
            Token::Substitution(expression) => match self.expression(expression, scope)? {
                Some(value) => self.write(output, &value),
                None => self.echo(token.to_string(), output),
            },
            Token::Conditional(conditional) => self.conditional(conditional, scope, output),
            Token::Repetition(repetition) => self.repetition(repetition, scope, output),
            Token::Calculation(sum) => match self.calc_sum(sum, scope)? {
                Some(value) => self.write(output, &format_double_general(value)),
                None => self.echo(token.to_string(), output),
            },
        }
    }

    /// A symbol with its filters applied; `None` when it cannot be evaluated.
    fn expression(
        &mut self,
        expression: &Expression,
        scope: &Scope<'_>,
    ) -> Result<Option<String>, TemplateError> {
        let mut value = match &expression.symbol {
            Some(symbol) if !symbol.steps.is_empty() => self.resolve_optional(symbol, scope)?,
            _ => None,
        };
        for filter in &expression.filters {
            self.tick()?;
            let mut options = Vec::with_capacity(filter.options.len());
            for option in &filter.options {
                options.push(match option {
                    Token::Text(text) => text.clone(),
                    other => {
                        let mut text = String::new();
                        self.token(other, scope, &mut text)?;
                        text
                    }
                });
            }
            value = filters::apply(
                &filter.name,
                value.as_deref(),
                &options,
                &self.filter_context,
            );
            if let Some(text) = &value {
                self.check_size(text.len())?;
                self.charge_bytes(text.len())?;
            }
        }
        Ok(value)
    }

    fn conditional(
        &mut self,
        conditional: &Conditional,
        scope: &Scope<'_>,
        output: &mut String,
    ) -> Result<(), TemplateError> {
        if conditional.kind == ConditionalKind::Unless {
            let Some(branch) = conditional.branches.first() else {
                return Ok(());
            };
            return match self.condition(&branch.condition, scope)? {
                None => self.echo(ConditionalFrom(conditional, 0).to_string(), output),
                Some(true) => self.tokens(&conditional.otherwise, scope, output),
                Some(false) => self.tokens(&branch.body, scope, output),
            };
        }
        for (position, branch) in conditional.branches.iter().enumerate() {
            match self.condition(&branch.condition, scope)? {
                // A side that cannot be evaluated leaves this branch and those after it as written.
                None => {
                    return self.echo(ConditionalFrom(conditional, position).to_string(), output);
                }
                Some(true) => return self.tokens(&branch.body, scope, output),
                Some(false) => {}
            }
        }
        self.tokens(&conditional.otherwise, scope, output)
    }

    /// Evaluates a condition; `None` when a filtered side cannot be evaluated.
    fn condition(
        &mut self,
        condition: &Condition,
        scope: &Scope<'_>,
    ) -> Result<Option<bool>, TemplateError> {
        let Some(left) = self.operand(&condition.left, scope)? else {
            return Ok(None);
        };
        let Some(Comparison { equal, right }) = &condition.comparison else {
            return Ok(Some(is_truthy(&left)));
        };
        let right = match right {
            Operand::Text(text) => text.clone(),
            Operand::Expression(expression) => match self.operand(expression, scope)? {
                Some(value) => value,
                None => return Ok(None),
            },
        };
        // Comparisons are ordinal: case matters.
        Ok(Some((left == right) == *equal))
    }

    /// One side of a condition: a bare symbol is empty when unknown (so unknown is falsy), a
    /// filtered one may be unevaluable.
    fn operand(
        &mut self,
        expression: &Expression,
        scope: &Scope<'_>,
    ) -> Result<Option<String>, TemplateError> {
        if expression.filters.is_empty()
            && let Some(symbol) = &expression.symbol
        {
            return Ok(Some(
                self.resolve_optional(symbol, scope)?.unwrap_or_default(),
            ));
        }
        let value = self.expression(expression, scope)?;
        if value.is_none() {
            self.unresolved.push(expression.to_string());
        }
        Ok(value)
    }

    fn repetition(
        &mut self,
        repetition: &Repetition,
        scope: &Scope<'_>,
        output: &mut String,
    ) -> Result<(), TemplateError> {
        let items = self.resolve_all(&repetition.collection, scope)?;
        let count = items.len();
        for (index, item) in items.into_iter().enumerate() {
            self.tick()?;
            let locals = loop_locals(&repetition.enumerator, item, index, count);
            let inner = Scope {
                binding: locals,
                parent: Some(scope),
            };
            self.tokens(&repetition.body, &inner, output)?;
        }
        Ok(())
    }

    // ----- Calculations ------------------------------------------------------------------------

    fn calc_sum(&mut self, sum: &CalcSum, scope: &Scope<'_>) -> Result<Option<f64>, TemplateError> {
        let Some(mut total) = self.calc_product(&sum.first, scope)? else {
            return Ok(None);
        };
        for (operator, product) in &sum.rest {
            let Some(value) = self.calc_product(product, scope)? else {
                return Ok(None);
            };
            total = match operator {
                CalcOperator::Subtract => total - value,
                _ => total + value,
            };
        }
        Ok(Some(total))
    }

    fn calc_product(
        &mut self,
        product: &CalcProduct,
        scope: &Scope<'_>,
    ) -> Result<Option<f64>, TemplateError> {
        let Some(mut total) = self.calc_factor(&product.first, scope)? else {
            return Ok(None);
        };
        for (operator, factor) in &product.rest {
            let Some(value) = self.calc_factor(factor, scope)? else {
                return Ok(None);
            };
            total = match operator {
                CalcOperator::Divide => total / value,
                _ => total * value,
            };
        }
        Ok(Some(total))
    }

    fn calc_factor(
        &mut self,
        factor: &CalcFactor,
        scope: &Scope<'_>,
    ) -> Result<Option<f64>, TemplateError> {
        self.tick()?;
        match factor {
            CalcFactor::Constant(value) => Ok(Some(*value)),
            CalcFactor::Variable(symbol) => Ok(self
                .resolve_optional(symbol, scope)?
                .and_then(|text| parse_double(&text))),
            CalcFactor::Group(sum) => self.deeper(|evaluator| evaluator.calc_sum(sum, scope)),
        }
    }

    // ----- Symbol resolution -------------------------------------------------------------------

    /// The value of a symbol, or `None` when it is unknown or has no value.
    fn resolve_optional(
        &mut self,
        symbol: &Symbol,
        scope: &Scope<'_>,
    ) -> Result<Option<String>, TemplateError> {
        Ok(self
            .walk(symbol, scope)?
            .and_then(|binding| binding.item.clone()))
    }

    /// The items `#{each}` iterates: indexed children, else the elements of a JSON array or
    /// properties of a JSON object, else the comma-separated parts of the value.
    pub(crate) fn resolve_all(
        &mut self,
        symbol: &Symbol,
        scope: &Scope<'_>,
    ) -> Result<Vec<Arc<Binding>>, TemplateError> {
        let Some(binding) = self.walk(symbol, scope)? else {
            return Ok(Vec::new());
        };
        if !binding.indexable.is_empty() {
            return Ok(binding.indexable.values().cloned().collect());
        }
        let Some(item) = &binding.item else {
            return Ok(Vec::new());
        };
        if let Some(items) = crate::json::items(item) {
            return Ok(items);
        }
        // Octostache splits on commas without trimming, and an empty value is one empty item.
        Ok(item.split(',').map(Binding::leaf).collect())
    }

    /// Finds a symbol's binding, evaluating its value if that is a template.
    fn walk(
        &mut self,
        symbol: &Symbol,
        scope: &Scope<'_>,
    ) -> Result<Option<Arc<Binding>>, TemplateError> {
        match self.deeper(|evaluator| evaluator.walk_guarded(symbol, scope)) {
            Err(TemplateError::RecursiveDefinition { .. } | TemplateError::TooDeep { .. })
                if self.lenient =>
            {
                Ok(None)
            }
            other => other,
        }
    }

    fn walk_guarded(
        &mut self,
        symbol: &Symbol,
        scope: &Scope<'_>,
    ) -> Result<Option<Arc<Binding>>, TemplateError> {
        self.tick()?;
        let as_written = symbol.to_string();
        let key = (fold_case(&as_written), symbol.position);
        if self.resolving.contains(&key) {
            let mut chain = self.resolving_as_written.clone();
            chain.push(as_written.clone());
            return Err(TemplateError::RecursiveDefinition {
                variable: as_written,
                chain,
            });
        }
        self.resolving.push(key);
        self.resolving_as_written.push(as_written);
        let result = self.walk_scopes(symbol, scope);
        self.resolving.pop();
        self.resolving_as_written.pop();
        result
    }

    fn walk_scopes(
        &mut self,
        symbol: &Symbol,
        scope: &Scope<'_>,
    ) -> Result<Option<Arc<Binding>>, TemplateError> {
        let mut steps: Vec<ResolvedStep<'_>> = symbol
            .steps
            .iter()
            .map(|step| match step {
                Step::Identifier(name) => ResolvedStep::Name(name),
                Step::Index(Index::Literal(index)) => ResolvedStep::Key(Some(index.clone())),
                Step::Index(Index::Symbol(inner)) => ResolvedStep::Pending(inner),
            })
            .collect();
        let mut level = Some(scope);
        while let Some(current) = level {
            for step in &mut steps {
                if let ResolvedStep::Pending(inner) = step
                    && let Some(binding) = self.walk(inner, current)?
                {
                    *step = ResolvedStep::Key(binding.item.clone());
                }
            }
            match self.walk_steps(&steps, current)? {
                Walk::Found(binding) => return self.finish(binding, current).map(Some),
                Walk::Abort => return Ok(None),
                Walk::NotFound => level = current.parent,
            }
        }
        Ok(None)
    }

    fn walk_steps(
        &mut self,
        steps: &[ResolvedStep<'_>],
        scope: &Scope<'_>,
    ) -> Result<Walk, TemplateError> {
        let mut binding = Arc::clone(&scope.binding);
        for step in steps {
            let next = match step {
                ResolvedStep::Name(name) => match binding.children.get(name) {
                    Some(child) => Some(Arc::clone(child)),
                    None => self.json_lookup(&binding, name, scope)?,
                },
                ResolvedStep::Key(Some(index)) => {
                    if index == "*"
                        && let Some(first) = binding.indexable.first()
                    {
                        Some(Arc::clone(first))
                    } else {
                        match binding.indexable.get(index) {
                            Some(child) => Some(Arc::clone(child)),
                            None => self.json_lookup(&binding, index, scope)?,
                        }
                    }
                }
                ResolvedStep::Key(None) | ResolvedStep::Pending(_) => return Ok(Walk::Abort),
            };
            match next {
                Some(child) => binding = child,
                None => return Ok(Walk::NotFound),
            }
        }
        Ok(Walk::Found(binding))
    }

    /// Looks a property up inside a binding's value read as JSON. The value is evaluated first
    /// if it is a template; a recursive definition met while doing so just means "not found",
    /// as in Octostache.
    fn json_lookup(
        &mut self,
        binding: &Binding,
        property: &str,
        scope: &Scope<'_>,
    ) -> Result<Option<Arc<Binding>>, TemplateError> {
        let Some(item) = &binding.item else {
            return Ok(None);
        };
        if item.is_empty() || property.is_empty() {
            return Ok(None);
        }
        self.tick()?;
        let text = if item.contains("#{") {
            let unresolved_before = self.unresolved.len();
            let expanded = match self.expand(item, scope) {
                Ok(text) => text,
                Err(TemplateError::RecursiveDefinition { .. }) => {
                    self.unresolved.truncate(unresolved_before);
                    return Ok(None);
                }
                Err(error) => return Err(error),
            };
            // Octostache discards what could not be resolved while reading the JSON.
            self.unresolved.truncate(unresolved_before);
            expanded
        } else {
            item.clone()
        };
        Ok(crate::json::lookup(&text, property))
    }

    /// The binding a walk ends on, with its value evaluated. Like Octostache, a node with a
    /// value is replaced by a plain value (dropping its children); one without is kept whole,
    /// so its indexed children can be iterated.
    fn finish(
        &mut self,
        binding: Arc<Binding>,
        scope: &Scope<'_>,
    ) -> Result<Arc<Binding>, TemplateError> {
        let Some(item) = &binding.item else {
            return Ok(binding);
        };
        if !item.contains("#{") {
            return Ok(Binding::leaf(item.clone()));
        }
        match self.parsed(item) {
            Some(template) => {
                let text = self.expand_parsed(&template, scope)?;
                Ok(Binding::leaf(text))
            }
            // A value that does not parse is used as it is.
            None => Ok(binding),
        }
    }

    /// Evaluates a variable's value as a template; a value that does not parse is used as it is.
    fn expand(&mut self, text: &str, scope: &Scope<'_>) -> Result<String, TemplateError> {
        match self.parsed(text) {
            Some(template) => self.expand_parsed(&template, scope),
            None => Ok(text.to_owned()),
        }
    }

    fn expand_parsed(
        &mut self,
        template: &[Token],
        scope: &Scope<'_>,
    ) -> Result<String, TemplateError> {
        if self.expansions >= self.limits.max_depth {
            return Err(TemplateError::TooDeep {
                variable: self.current_variable(),
                limit: self.limits.max_depth,
            });
        }
        self.expansions += 1;
        let mut output = String::new();
        let result = self.tokens(template, scope, &mut output);
        self.expansions -= 1;
        result.map(|()| output)
    }

    /// Parses a variable's value, once per evaluation.
    fn parsed(&mut self, text: &str) -> Option<Rc<Template>> {
        if let Some(cached) = self.parse_cache.get(text) {
            return cached.clone();
        }
        let parsed = parse_template(text, Mode::Strict, self.limits.max_nesting)
            .ok()
            .map(Rc::new);
        self.parse_cache.insert(text.to_owned(), parsed.clone());
        parsed
    }
}

/// The scope of one `#{each}` iteration: the loop variable plus
/// `Octopus.Template.Each.Index`, `.First` and `.Last`.
fn loop_locals(enumerator: &str, item: Arc<Binding>, index: usize, count: usize) -> Arc<Binding> {
    let mut locals = Binding::default();
    let special = |name| {
        [
            PathStep::Identifier("Octopus"),
            PathStep::Identifier("Template"),
            PathStep::Identifier("Each"),
            PathStep::Identifier(name),
        ]
    };
    let capitalized = |flag: bool| if flag { "True" } else { "False" };
    bind(&mut locals, &special("Index"), &index.to_string());
    bind(&mut locals, &special("First"), capitalized(index == 0));
    bind(
        &mut locals,
        &special("Last"),
        capitalized(index + 1 == count),
    );
    locals.children.insert(enumerator, item);
    Arc::new(locals)
}
