//! JSONLogic, compiled once. A rule is parsed into an [`Expr`] tree at bundle
//! load: operators resolved, arity checked, `var` paths split and classified,
//! regexes and CIDRs parsed, constant sub-expressions folded. Evaluation
//! (see [`eval`]) never looks at the JSON rule again.

pub mod eval;
pub mod value;

use super::input::{Input, VarPath};
use ipnet::IpNet;
use regex::Regex;
use serde_json::Value;
use std::net::IpAddr;

pub(crate) use eval::evaluate;
pub use eval::EvalError;
pub use value::Val;

/// Compiled regexes by pattern, shared by every policy that uses the same
/// pattern: a compiled regex holds tens of KB of automata, and generated or
/// per-service bundles repeat the same pattern in every service (1,000
/// copies in bench/bundlegen.rs's 10,000-policy bundle, ~35 MB). Bounded:
/// emptied when full, so patterns of bundles long gone are not kept.
/// Compilation only (bundle loads); the check path never touches it.
static REGEXES: std::sync::Mutex<Option<std::collections::HashMap<String, Regex>>> =
    std::sync::Mutex::new(None);
const SHARED_REGEXES: usize = 256;

fn shared_regex(pattern: &str) -> Result<Regex, regex::Error> {
    let mut shared = REGEXES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let shared = shared.get_or_insert_with(Default::default);
    if let Some(regex) = shared.get(pattern) {
        // A clone shares the compiled automata (and gets its own search
        // cache, so policies do not contend).
        return Ok(regex.clone());
    }
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()?;
    if shared.len() >= SHARED_REGEXES {
        shared.clear();
    }
    shared.insert(pattern.to_owned(), regex.clone());
    Ok(regex)
}

/// Deepest operator nesting a rule may have; keeps evaluation's recursion bounded.
const MAX_DEPTH: usize = 64;

/// A compiled JSONLogic rule.
#[derive(Debug)]
pub struct Rule {
    pub(crate) root: Expr,
}

impl Rule {
    /// Compile `rule`. Errors carry a JSON pointer relative to the rule.
    pub fn compile(rule: &Value) -> Result<Rule, CompileError> {
        let root = Compiler.compile(rule, &mut String::new(), 0)?;
        Ok(Rule { root })
    }

    /// Evaluate against an input.
    pub fn evaluate<'a, I: Input>(&'a self, input: &'a I) -> Result<Val<'a>, EvalError> {
        evaluate(&self.root, input)
    }

    /// Whether evaluating the rule may look up a path `wanted` accepts. A
    /// path computed at run time may be any path, so it counts; a `var`
    /// inside `map` and friends names an item's field but counts too. Errs
    /// on the side of yes: callers use it to decide what to fetch.
    pub fn may_read(&self, wanted: &dyn Fn(&VarPath) -> bool) -> bool {
        self.root.may_read(wanted)
    }
}

/// A rule that does not compile, and where (a JSON pointer into the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at {pointer}: {message}")]
pub struct CompileError {
    pub pointer: String,
    pub message: String,
}

#[derive(Debug)]
pub(crate) enum Expr {
    Const(Value),
    /// An array literal with non-constant elements.
    Array(Box<[Expr]>),
    Var {
        path: VarPath,
        default: Option<Box<Expr>>,
    },
    VarDynamic {
        path: Box<Expr>,
        default: Option<Box<Expr>>,
    },
    Op {
        op: Op,
        args: Box<[Expr]>,
    },
    Matches {
        subject: Box<Expr>,
        regex: Regex,
    },
    InCidr {
        subject: Box<Expr>,
        nets: Box<[IpNet]>,
    },
}

impl Expr {
    fn is_const(&self) -> bool {
        matches!(self, Expr::Const(_))
    }

    fn may_read(&self, wanted: &dyn Fn(&VarPath) -> bool) -> bool {
        let default_reads =
            |default: &Option<Box<Expr>>| default.as_ref().is_some_and(|d| d.may_read(wanted));
        match self {
            Expr::Const(_) => false,
            // `missing`/`missing_some` look up the paths their arguments
            // name: constant ones are asked like a `var`'s, a computed one
            // may be any path.
            Expr::Op {
                op: Op::Missing | Op::MissingSome,
                args,
            } => args.iter().any(|arg| match arg {
                Expr::Const(value) => names_wanted_path(value, wanted),
                _ => true,
            }),
            Expr::Array(items) | Expr::Op { args: items, .. } => {
                items.iter().any(|e| e.may_read(wanted))
            }
            Expr::Var { path, default } => wanted(path) || default_reads(default),
            Expr::VarDynamic { .. } => true,
            Expr::Matches { subject, .. } | Expr::InCidr { subject, .. } => {
                subject.may_read(wanted)
            }
        }
    }
}

/// Whether a constant argument of `missing`/`missing_some` names a path
/// `wanted` accepts (a key, or an array of keys).
fn names_wanted_path(value: &Value, wanted: &dyn Fn(&VarPath) -> bool) -> bool {
    match value {
        Value::String(key) => wanted(&VarPath::parse(key)),
        Value::Number(n) => wanted(&VarPath::parse(&n.to_string())),
        Value::Array(keys) => keys.iter().any(|k| names_wanted_path(k, wanted)),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    If,
    Eq,
    StrictEq,
    NotEq,
    StrictNotEq,
    Not,
    Truthy,
    Or,
    And,
    Gt,
    Ge,
    Lt,
    Le,
    Max,
    Min,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Map,
    Reduce,
    Filter,
    All,
    None,
    Some,
    Merge,
    In,
    Cat,
    Substr,
    Missing,
    MissingSome,
    Log,
    StartsWith,
    EndsWith,
}

/// How many arguments an operator takes (inclusive bounds).
struct Arity(usize, usize);
const ANY: usize = usize::MAX;

impl Op {
    fn lookup(name: &str) -> Option<(Op, Arity)> {
        use Op::*;
        Option::Some(match name {
            "if" | "?:" => (If, Arity(0, ANY)),
            "==" => (Eq, Arity(2, 2)),
            "===" => (StrictEq, Arity(2, 2)),
            "!=" => (NotEq, Arity(2, 2)),
            "!==" => (StrictNotEq, Arity(2, 2)),
            "!" => (Not, Arity(1, 1)),
            "!!" => (Truthy, Arity(1, 1)),
            "or" => (Or, Arity(1, ANY)),
            "and" => (And, Arity(1, ANY)),
            ">" => (Gt, Arity(2, 2)),
            ">=" => (Ge, Arity(2, 2)),
            "<" => (Lt, Arity(2, 3)),
            "<=" => (Le, Arity(2, 3)),
            "max" => (Max, Arity(1, ANY)),
            "min" => (Min, Arity(1, ANY)),
            "+" => (Add, Arity(0, ANY)),
            "-" => (Sub, Arity(1, 2)),
            "*" => (Mul, Arity(1, ANY)),
            "/" => (Div, Arity(2, 2)),
            "%" => (Mod, Arity(2, 2)),
            "map" => (Map, Arity(2, 2)),
            "reduce" => (Reduce, Arity(2, 3)),
            "filter" => (Filter, Arity(2, 2)),
            "all" => (All, Arity(2, 2)),
            "none" => (None, Arity(2, 2)),
            "some" => (Some, Arity(2, 2)),
            "merge" => (Merge, Arity(0, ANY)),
            "in" => (In, Arity(2, 2)),
            "cat" => (Cat, Arity(0, ANY)),
            "substr" => (Substr, Arity(2, 3)),
            "missing" => (Missing, Arity(0, ANY)),
            "missing_some" => (MissingSome, Arity(2, 2)),
            "log" => (Log, Arity(1, 1)),
            "starts_with" => (StartsWith, Arity(2, 2)),
            "ends_with" => (EndsWith, Arity(2, 2)),
            _ => return Option::None,
        })
    }

    /// Operators whose value depends on the data even with constant arguments.
    fn reads_data(self) -> bool {
        matches!(self, Op::Missing | Op::MissingSome | Op::Log)
    }

    /// Iterating operators: their second argument runs against each element,
    /// so only the first (and `reduce`'s initial value) decide constness.
    fn is_iteration(self) -> bool {
        matches!(
            self,
            Op::Map | Op::Reduce | Op::Filter | Op::All | Op::None | Op::Some
        )
    }
}

/// Operators this engine knows, for error messages.
const OPERATOR_NAMES: &str = "var, missing, missing_some, if, ?:, ==, ===, !=, !==, !, !!, or, and, >, >=, <, <=, max, min, +, -, *, /, %, map, reduce, filter, all, none, some, merge, in, cat, substr, log, starts_with, ends_with, matches, in_cidr";

struct Compiler;

/// Escape one JSON-pointer reference token (RFC 6901): `~` → `~0`, `/` → `~1`.
pub(crate) fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Compiler {
    fn compile(
        &mut self,
        rule: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<Expr, CompileError> {
        if depth > MAX_DEPTH {
            return Err(err(
                pointer,
                format!("rule nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        match rule {
            Value::Array(items) => {
                let mut compiled = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    compiled.push(self.child(item, pointer, &i.to_string(), depth)?);
                }
                if compiled.iter().all(Expr::is_const) {
                    let values = compiled
                        .into_iter()
                        .map(|e| match e {
                            Expr::Const(v) => v,
                            _ => Value::Null,
                        })
                        .collect();
                    Ok(Expr::Const(Value::Array(values)))
                } else {
                    Ok(Expr::Array(compiled.into_boxed_slice()))
                }
            }
            // json-logic-js: an object with exactly one key is an operation;
            // any other object is data.
            Value::Object(map) if map.len() == 1 => {
                let Some((name, raw_args)) = map.iter().next() else {
                    return Ok(Expr::Const(rule.clone()));
                };
                let op_pointer_len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape_pointer(name));
                let result = self.compile_operation(name, raw_args, pointer, depth);
                if result.is_ok() {
                    pointer.truncate(op_pointer_len);
                }
                result
            }
            other => Ok(Expr::Const(other.clone())),
        }
    }

    fn child(
        &mut self,
        rule: &Value,
        pointer: &mut String,
        token: &str,
        depth: usize,
    ) -> Result<Expr, CompileError> {
        let len = pointer.len();
        pointer.push('/');
        pointer.push_str(token);
        let result = self.compile(rule, pointer, depth + 1);
        if result.is_ok() {
            pointer.truncate(len);
        }
        result
    }

    /// Arguments as json-logic-js sees them: a non-array is one argument.
    fn args(raw: &Value) -> (&[Value], bool) {
        match raw {
            Value::Array(items) => (items.as_slice(), true),
            single => (std::slice::from_ref(single), false),
        }
    }

    fn compile_args(
        &mut self,
        raw: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<Vec<Expr>, CompileError> {
        let (args, is_array) = Self::args(raw);
        let mut out = Vec::with_capacity(args.len());
        for (i, arg) in args.iter().enumerate() {
            if is_array {
                out.push(self.child(arg, pointer, &i.to_string(), depth)?);
            } else {
                out.push(self.compile(arg, pointer, depth + 1)?);
            }
        }
        Ok(out)
    }

    fn compile_operation(
        &mut self,
        name: &str,
        raw_args: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<Expr, CompileError> {
        match name {
            "var" => return self.compile_var(raw_args, pointer, depth),
            "matches" => return self.compile_matches(raw_args, pointer, depth),
            "in_cidr" => return self.compile_in_cidr(raw_args, pointer, depth),
            _ => {}
        }
        let Some((op, Arity(min, max))) = Op::lookup(name) else {
            return Err(err(
                pointer,
                format!("unknown operator \"{name}\" (known: {OPERATOR_NAMES})"),
            ));
        };
        let args = self.compile_args(raw_args, pointer, depth)?;
        if args.len() < min || args.len() > max {
            return Err(err(pointer, arity_message(name, min, max, args.len())));
        }
        let expr = Expr::Op {
            op,
            args: args.into_boxed_slice(),
        };
        Ok(fold_constant(expr))
    }

    fn compile_var(
        &mut self,
        raw_args: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<Expr, CompileError> {
        let mut args = self.compile_args(raw_args, pointer, depth)?;
        if args.len() > 2 {
            return Err(err(pointer, arity_message("var", 0, 2, args.len())));
        }
        let default = if args.len() == 2 {
            args.pop().map(Box::new)
        } else {
            None
        };
        let path_arg = args.pop();
        let path = match path_arg {
            None | Some(Expr::Const(Value::Null)) => VarPath::parse(""),
            Some(Expr::Const(Value::String(s))) => VarPath::parse(&s),
            Some(Expr::Const(Value::Number(n))) => VarPath::parse(&n.to_string()),
            Some(Expr::Const(other)) => {
                return Err(err(
                    pointer,
                    format!(
                        "var path must be a string or a number, got {}",
                        type_name(&other)
                    ),
                ))
            }
            Some(dynamic) => {
                return Ok(Expr::VarDynamic {
                    path: Box::new(dynamic),
                    default,
                });
            }
        };
        Ok(Expr::Var { path, default })
    }

    /// Compile the two arguments of an extension operator.
    fn compile_pair(
        &mut self,
        name: &str,
        raw_args: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<(Expr, Expr), CompileError> {
        let mut args = self.compile_args(raw_args, pointer, depth)?;
        if args.len() != 2 {
            return Err(err(pointer, arity_message(name, 2, 2, args.len())));
        }
        let second = args.pop().unwrap_or(Expr::Const(Value::Null));
        let first = args.pop().unwrap_or(Expr::Const(Value::Null));
        Ok((first, second))
    }

    fn compile_matches(
        &mut self,
        raw_args: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<Expr, CompileError> {
        let (subject, pattern) = self.compile_pair("matches", raw_args, pointer, depth)?;
        let Expr::Const(Value::String(pattern)) = pattern else {
            return Err(err(
                &format!("{pointer}/1"),
                "matches: the pattern must be a literal string".into(),
            ));
        };
        let regex = shared_regex(&pattern).map_err(|e| {
            let detail = e.to_string().lines().last().unwrap_or("").trim().to_owned();
            err(
                &format!("{pointer}/1"),
                format!("invalid regex {pattern:?}: {detail}"),
            )
        })?;
        Ok(Expr::Matches {
            subject: Box::new(subject),
            regex,
        })
    }

    fn compile_in_cidr(
        &mut self,
        raw_args: &Value,
        pointer: &mut String,
        depth: usize,
    ) -> Result<Expr, CompileError> {
        let (subject, networks) = self.compile_pair("in_cidr", raw_args, pointer, depth)?;
        let networks_pointer = format!("{pointer}/1");
        let literals: Vec<Value> = match networks {
            Expr::Const(Value::String(s)) => vec![Value::String(s)],
            Expr::Const(Value::Array(items)) if !items.is_empty() => items,
            _ => return Err(err(
                &networks_pointer,
                "in_cidr: the networks must be a literal CIDR string or a non-empty array of them"
                    .into(),
            )),
        };
        let mut nets = Vec::with_capacity(literals.len());
        for (i, literal) in literals.iter().enumerate() {
            let text = literal.as_str().unwrap_or_default();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => {
                    let at =
                        if literals.len() > 1 && matches!(raw_args.get(1), Some(Value::Array(_))) {
                            format!("{networks_pointer}/{i}")
                        } else {
                            networks_pointer.clone()
                        };
                    return Err(err(&at, format!("in_cidr: invalid CIDR {literal}")));
                }
            }
        }
        Ok(Expr::InCidr {
            subject: Box::new(subject),
            nets: nets.into_boxed_slice(),
        })
    }
}

/// Replace an operation on constants with its value, so evaluation does not
/// recompute it for every request.
fn fold_constant(expr: Expr) -> Expr {
    let Expr::Op { op, args } = &expr else {
        return expr;
    };
    let constant = if op.reads_data() {
        false
    } else if op.is_iteration() {
        args[0].is_const() && args.get(2).is_none_or(Expr::is_const)
    } else {
        args.iter().all(Expr::is_const)
    };
    if !constant {
        return expr;
    }
    let value = {
        let empty = Value::Null;
        match evaluate(&expr, &empty) {
            Ok(v) => v.to_json(),
            Err(_) => return expr,
        }
    };
    Expr::Const(value)
}

fn err(pointer: &str, message: String) -> CompileError {
    CompileError {
        pointer: if pointer.is_empty() {
            "/".into()
        } else {
            pointer.into()
        },
        message,
    }
}

fn arity_message(name: &str, min: usize, max: usize, got: usize) -> String {
    let expected = if min == max {
        format!("{min}")
    } else if max == ANY {
        format!("at least {min}")
    } else {
        format!("{min} to {max}")
    };
    format!("operator \"{name}\" takes {expected} argument(s), got {got}")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile_err(rule: Value) -> CompileError {
        match Rule::compile(&rule) {
            Err(e) => e,
            Ok(_) => panic!("rule compiled but should not: {rule}"),
        }
    }

    #[test]
    fn errors_point_at_the_offending_node() {
        let e = compile_err(json!({"and": [true, {"eqq": [1, 1]}]}));
        assert_eq!(e.pointer, "/and/1/eqq");
        assert!(e.message.contains("unknown operator \"eqq\""), "{e}");

        let e = compile_err(json!({"or": [{"==": [1]}]}));
        assert_eq!(e.pointer, "/or/0/==");
        assert!(e.message.contains("takes 2 argument(s), got 1"), "{e}");

        let e = compile_err(json!({"matches": [{"var": "request.path"}, "(unclosed"]}));
        assert_eq!(e.pointer, "/matches/1");
        assert!(e.message.contains("invalid regex"), "{e}");

        let e = compile_err(
            json!({"in_cidr": [{"var": "source.address"}, ["10.0.0.0/8", "300.1.0.0/16"]]}),
        );
        assert_eq!(e.pointer, "/in_cidr/1/1");
        assert!(e.message.contains("invalid CIDR"), "{e}");
    }

    #[test]
    fn constants_are_folded() {
        let rule = Rule::compile(&json!({"in": ["a", {"merge": [["a"], ["b"]]}]})).unwrap();
        assert!(matches!(rule.root, Expr::Const(Value::Bool(true))));
        let rule = Rule::compile(&json!({"==": [{"var": "x"}, {"+": [1, 2]}]})).unwrap();
        let Expr::Op { args, .. } = &rule.root else {
            panic!("not an op")
        };
        assert!(matches!(&args[1], Expr::Const(v) if v == &json!(3)));
    }
}
