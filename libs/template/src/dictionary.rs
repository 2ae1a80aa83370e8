//! The variable dictionary: case-insensitive storage plus the evaluation entry points.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, FixedOffset, Local};

use crate::ast::Step;
use crate::binding::{Binding, CiMap, PathStep, bind};
use crate::eval::{Evaluator, Scope};
use crate::filters::FilterContext;
use crate::parser::{Mode, ParseError, parse_symbol_prefix, parse_template};
use crate::{Evaluation, Limits, TemplateError, is_truthy};

/// Names with more steps than this are not bound (they could not be referenced sensibly, and a
/// bound limit keeps the tree shallow).
const MAX_NAME_STEPS: usize = 256;

/// Variables by name (case-insensitive), and the templates evaluated against them.
///
/// Names are bound the way Octostache binds them: `Octopus.Action[Web].Port` is reachable as
/// `#{Octopus.Action[Web].Port}`, iterable with `#{each a in Octopus.Action}`, and `A.B` and
/// `A[B]` are different variables. Setting a name that differs only in case replaces the value.
#[derive(Clone, Default)]
pub struct VariableDictionary {
    variables: CiMap<String>,
    tree: OnceLock<Arc<Binding>>,
    limits: Limits,
    now: Option<DateTime<FixedOffset>>,
}

impl VariableDictionary {
    /// An empty dictionary with the default limits.
    pub fn new() -> VariableDictionary {
        VariableDictionary::default()
    }

    /// Sets a variable, replacing any value under the same name in any case.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.variables.insert(&name, value.into());
        self.tree = OnceLock::new();
    }

    /// Removes a variable, returning its raw value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let removed = self.variables.remove(name);
        if removed.is_some() {
            self.tree = OnceLock::new();
        }
        removed
    }

    /// The value of a variable, evaluated. A value that does not parse as a template is
    /// returned as it is, as Octostache does.
    pub fn get(&self, name: &str) -> Result<Option<String>, TemplateError> {
        let Some(raw) = self.variables.get(name) else {
            return Ok(None);
        };
        match self.evaluate(raw) {
            Ok(value) => Ok(Some(value)),
            Err(TemplateError::Parse { .. }) => Ok(Some(raw.clone())),
            Err(error) => Err(error),
        }
    }

    /// The value of a variable exactly as it was set.
    pub fn get_raw(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    /// Whether a variable with this name (in any case) is set.
    pub fn contains(&self, name: &str) -> bool {
        self.variables.get(name).is_some()
    }

    /// The number of variables.
    pub fn len(&self) -> usize {
        self.variables.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.variables.is_empty()
    }

    /// The variables and their raw values, in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.variables
            .iter()
            .map(|(name, value)| (name, value.as_str()))
    }

    /// The limits evaluation runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Replaces the limits evaluation runs under.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.tree = OnceLock::new();
    }

    /// Fixes the clock that `NowDate` and `NowDateUtc` read, and whose offset is taken as the
    /// machine's local offset; by default they read the system clock and zone.
    pub fn set_now(&mut self, now: DateTime<FixedOffset>) {
        self.now = Some(now);
    }

    /// Evaluates a template. Unknown variables are left as written (`#{Missing}` stays
    /// `#{Missing}`); a template that does not parse, a recursive definition and an exceeded
    /// limit are errors.
    pub fn evaluate(&self, template: &str) -> Result<String, TemplateError> {
        self.evaluate_detailed(template)
            .map(|evaluation| evaluation.output)
    }

    /// Evaluates a template like [`VariableDictionary::evaluate`], also reporting what was left
    /// as written.
    pub fn evaluate_detailed(&self, template: &str) -> Result<Evaluation, TemplateError> {
        self.run(template, Mode::Strict)
    }

    /// Evaluates a template without ever failing, as Octostache does when substituting into
    /// files: a `#{` that does not parse is kept as text and evaluation goes on after it, a
    /// recursive or too-deep reference is left as written, and if a limit is exceeded the
    /// template is returned unchanged.
    pub fn evaluate_lenient(&self, template: &str) -> String {
        self.run(template, Mode::ContinueOnErrors)
            .map_or_else(|_| template.to_owned(), |evaluation| evaluation.output)
    }

    /// Evaluates a step run condition (such as `#{if Octopus.Deployment.Error}true#{/if}` or
    /// `#{IsProduction}`): true when the result is truthy and nothing was left unresolved, as
    /// Octostache's `EvaluateTruthy`. Octopus treats an error as false; it is returned here so
    /// that the caller can report it.
    pub fn evaluate_condition(&self, expression: &str) -> Result<bool, TemplateError> {
        let evaluation = self.evaluate_detailed(expression)?;
        Ok(evaluation.unresolved.is_empty() && is_truthy(&evaluation.output))
    }

    /// The items `#{each x in collection}` would iterate: for `Octopus.Action` with
    /// `Octopus.Action[A].Name` and `Octopus.Action[B].Name` set, `["A", "B"]`.
    pub fn indexes(&self, collection: &str) -> Result<Vec<String>, TemplateError> {
        let Some(symbol) = parse_symbol_prefix(collection, self.limits.max_nesting) else {
            return Ok(Vec::new());
        };
        let mut evaluator = self.evaluator(false);
        let scope = Scope::root(self.tree());
        let items = evaluator.resolve_all(&symbol, &scope)?;
        Ok(items
            .iter()
            .filter_map(|binding| binding.item.clone())
            .collect())
    }

    fn run(&self, template: &str, mode: Mode) -> Result<Evaluation, TemplateError> {
        // Octostache does not even parse text without `#{`.
        if !template.contains("#{") {
            return Ok(Evaluation {
                output: template.to_owned(),
                unresolved: Vec::new(),
            });
        }
        let parsed = parse_template(template, mode, self.limits.max_nesting).map_err(
            |ParseError { position, message }| TemplateError::Parse { position, message },
        )?;
        let mut evaluator = self.evaluator(mode == Mode::ContinueOnErrors);
        let scope = Scope::root(self.tree());
        let output = evaluator.evaluate(&parsed, &scope)?;
        let mut seen = HashSet::new();
        let unresolved: Vec<String> = evaluator
            .unresolved
            .into_iter()
            .filter(|token| seen.insert(token.clone()))
            .collect();
        Ok(Evaluation { output, unresolved })
    }

    fn evaluator(&self, lenient: bool) -> Evaluator {
        let now = self.now.unwrap_or_else(|| Local::now().fixed_offset());
        let context = FilterContext {
            now,
            max_output: self.limits.max_output_bytes,
        };
        Evaluator::new(self.limits, lenient, context)
    }

    /// The variable tree, built on first use after a change.
    fn tree(&self) -> Arc<Binding> {
        Arc::clone(self.tree.get_or_init(|| {
            let mut root = Binding::default();
            for (name, value) in self.variables.iter() {
                let Some(symbol) = parse_symbol_prefix(name, self.limits.max_nesting) else {
                    continue;
                };
                if symbol.steps.len() > MAX_NAME_STEPS {
                    continue;
                }
                // A name with an `[#{...}]` index cannot be bound (Octostache throws on it).
                let path: Option<Vec<PathStep<'_>>> = symbol
                    .steps
                    .iter()
                    .map(|step| match step {
                        Step::Identifier(name) => Some(PathStep::Identifier(name)),
                        Step::Index(crate::ast::Index::Literal(index)) => {
                            Some(PathStep::Index(index))
                        }
                        Step::Index(crate::ast::Index::Symbol(_)) => None,
                    })
                    .collect();
                if let Some(path) = path {
                    bind(&mut root, &path, value);
                }
            }
            Arc::new(root)
        }))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for VariableDictionary {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> VariableDictionary {
        let mut dictionary = VariableDictionary::new();
        dictionary.extend(pairs);
        dictionary
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for VariableDictionary {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, pairs: I) {
        for (name, value) in pairs {
            self.set(name, value);
        }
    }
}

/// Values may be sensitive, so only names are shown.
impl fmt::Debug for VariableDictionary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("VariableDictionary")
            .field(
                "names",
                &self
                    .variables
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
