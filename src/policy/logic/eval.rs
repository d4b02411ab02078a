//! Evaluation of compiled rules with json-logic-js semantics.

use super::value::{compare, loose_eq, strict_eq, Val};
use super::{Expr, Op};
use crate::policy::input::{walk, Input, VarPath};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::net::IpAddr;

/// Most operator steps one evaluation may take. Rules are bounded in depth,
/// but `map`/`reduce` over a large request array are not; a policy that hits
/// this fails (and the sidecar's `--on-error` applies) instead of stalling
/// the check path.
pub const STEP_BUDGET: u32 = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("evaluation exceeded {STEP_BUDGET} steps")]
    BudgetExceeded,
}

/// Evaluate a compiled rule against an input.
pub(crate) fn evaluate<'a, I: Input>(expr: &'a Expr, input: &'a I) -> Result<Val<'a>, EvalError> {
    let mut ev = Evaluator {
        input,
        steps: STEP_BUDGET,
    };
    ev.eval(expr, Scope::Root)
}

/// What `var` resolves against: the input at the top level; the current
/// element inside `map`/`filter`/`all`/`some`/`none`; `{current, accumulator}`
/// inside `reduce`.
#[derive(Clone, Copy)]
enum Scope<'s, 'a> {
    Root,
    Item(&'s Val<'a>),
    Reduce {
        current: &'s Val<'a>,
        accumulator: &'s Val<'a>,
    },
}

struct Evaluator<'a, I> {
    input: &'a I,
    steps: u32,
}

impl<'a, I: Input> Evaluator<'a, I> {
    fn lookup(&self, scope: Scope<'_, 'a>, path: &VarPath) -> Option<Val<'a>> {
        match scope {
            Scope::Root => self.input.resolve(path),
            Scope::Item(item) => walk(item.clone(), path.segments()),
            Scope::Reduce {
                current,
                accumulator,
            } => {
                let (first, rest) = path.segments().split_first()?;
                let start = match first.as_ref() {
                    "current" => current.clone(),
                    "accumulator" => accumulator.clone(),
                    _ => return None,
                };
                walk(start, rest)
            }
        }
    }

    fn eval(&mut self, expr: &'a Expr, scope: Scope<'_, 'a>) -> Result<Val<'a>, EvalError> {
        self.steps = self.steps.checked_sub(1).ok_or(EvalError::BudgetExceeded)?;
        match expr {
            Expr::Const(value) => Ok(Val::from_json(value)),
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    out.push(self.eval(item, scope)?);
                }
                Ok(Val::List(out))
            }
            Expr::Var { path, default } => match self.lookup(scope, path) {
                Some(v) => Ok(v),
                None => self.eval_default(default.as_deref(), scope),
            },
            Expr::VarDynamic { path, default } => {
                let raw = self.eval(path, scope)?;
                let path = match raw {
                    Val::Null => VarPath::parse(""),
                    other => VarPath::parse(&other.to_js_string()),
                };
                match self.lookup(scope, &path) {
                    Some(v) => Ok(v),
                    None => self.eval_default(default.as_deref(), scope),
                }
            }
            Expr::Matches { subject, regex } => {
                let v = self.eval(subject, scope)?;
                Ok(Val::Bool(match &v {
                    Val::Str(s) => regex.is_match(s),
                    Val::Num(_) => regex.is_match(&v.to_js_string()),
                    _ => false,
                }))
            }
            Expr::InCidr { subject, nets } => {
                let v = self.eval(subject, scope)?;
                let addr = match &v {
                    Val::Str(s) => s.parse::<IpAddr>().ok(),
                    _ => None,
                };
                Ok(Val::Bool(
                    addr.is_some_and(|a| nets.iter().any(|net| net.contains(&a))),
                ))
            }
            Expr::Op { op, args } => self.eval_op(*op, args, scope),
        }
    }

    fn eval_default(
        &mut self,
        default: Option<&'a Expr>,
        scope: Scope<'_, 'a>,
    ) -> Result<Val<'a>, EvalError> {
        match default {
            Some(d) => self.eval(d, scope),
            None => Ok(Val::Null),
        }
    }

    fn arg(
        &mut self,
        args: &'a [Expr],
        i: usize,
        scope: Scope<'_, 'a>,
    ) -> Result<Val<'a>, EvalError> {
        match args.get(i) {
            Some(e) => self.eval(e, scope),
            None => Ok(Val::Null),
        }
    }

    fn eval_op(
        &mut self,
        op: Op,
        args: &'a [Expr],
        scope: Scope<'_, 'a>,
    ) -> Result<Val<'a>, EvalError> {
        Ok(match op {
            Op::If => {
                let mut i = 0;
                while i + 1 < args.len() {
                    if self.eval(&args[i], scope)?.truthy() {
                        return self.eval(&args[i + 1], scope);
                    }
                    i += 2;
                }
                if i < args.len() {
                    return self.eval(&args[i], scope);
                }
                Val::Null
            }
            Op::Or | Op::And => {
                let want = op == Op::Or;
                let mut last = Val::Null;
                for arg in args {
                    last = self.eval(arg, scope)?;
                    if last.truthy() == want {
                        return Ok(last);
                    }
                }
                last
            }
            Op::Not => Val::Bool(!self.arg(args, 0, scope)?.truthy()),
            Op::Truthy => Val::Bool(self.arg(args, 0, scope)?.truthy()),
            Op::Eq | Op::NotEq | Op::StrictEq | Op::StrictNotEq => {
                let a = self.arg(args, 0, scope)?;
                let b = self.arg(args, 1, scope)?;
                Val::Bool(match op {
                    Op::Eq => loose_eq(&a, &b),
                    Op::NotEq => !loose_eq(&a, &b),
                    Op::StrictEq => strict_eq(&a, &b),
                    _ => !strict_eq(&a, &b),
                })
            }
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                let a = self.arg(args, 0, scope)?;
                let b = self.arg(args, 1, scope)?;
                let holds = |x: &Val<'_>, y: &Val<'_>| {
                    let ord = compare(x, y);
                    match op {
                        Op::Gt => ord == Some(Ordering::Greater),
                        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                        Op::Lt => ord == Some(Ordering::Less),
                        _ => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                    }
                };
                if args.len() == 3 {
                    // Between: a < b < c, all three evaluated as in JavaScript.
                    let c = self.arg(args, 2, scope)?;
                    Val::Bool(holds(&a, &b) && holds(&b, &c))
                } else {
                    Val::Bool(holds(&a, &b))
                }
            }
            Op::Max | Op::Min => {
                let mut result = if op == Op::Max {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                for arg in args {
                    let n = self.eval(arg, scope)?.to_number();
                    if n.is_nan() {
                        return Ok(Val::Num(f64::NAN));
                    }
                    result = if op == Op::Max {
                        result.max(n)
                    } else {
                        result.min(n)
                    };
                }
                Val::Num(result)
            }
            Op::Add => {
                let mut sum = 0.0;
                for arg in args {
                    sum += self.eval(arg, scope)?.parse_float();
                }
                Val::Num(sum)
            }
            Op::Mul => {
                // Array.prototype.reduce without a seed: one argument is
                // returned as it is.
                if args.len() == 1 {
                    return self.eval(&args[0], scope);
                }
                let mut product = 1.0;
                for arg in args {
                    product *= self.eval(arg, scope)?.parse_float();
                }
                Val::Num(product)
            }
            Op::Sub => {
                let a = self.arg(args, 0, scope)?.to_number();
                if args.len() == 1 {
                    Val::Num(-a)
                } else {
                    Val::Num(a - self.arg(args, 1, scope)?.to_number())
                }
            }
            Op::Div => {
                let a = self.arg(args, 0, scope)?.to_number();
                Val::Num(a / self.arg(args, 1, scope)?.to_number())
            }
            Op::Mod => {
                let a = self.arg(args, 0, scope)?.to_number();
                Val::Num(a % self.arg(args, 1, scope)?.to_number())
            }
            Op::Map | Op::Filter | Op::All | Op::None | Op::Some => {
                let items = self
                    .arg(args, 0, scope)?
                    .into_array_items()
                    .unwrap_or_default();
                let logic = &args[1];
                match op {
                    Op::Map => {
                        let mut out = Vec::with_capacity(items.len());
                        for item in &items {
                            out.push(self.eval(logic, Scope::Item(item))?);
                        }
                        Val::List(out)
                    }
                    Op::Filter => {
                        let mut out = Vec::new();
                        for item in items {
                            if self.eval(logic, Scope::Item(&item))?.truthy() {
                                out.push(item);
                            }
                        }
                        Val::List(out)
                    }
                    Op::All => {
                        if items.is_empty() {
                            return Ok(Val::Bool(false));
                        }
                        for item in &items {
                            if !self.eval(logic, Scope::Item(item))?.truthy() {
                                return Ok(Val::Bool(false));
                            }
                        }
                        Val::Bool(true)
                    }
                    _ => {
                        let mut any = false;
                        for item in &items {
                            if self.eval(logic, Scope::Item(item))?.truthy() {
                                any = true;
                                break;
                            }
                        }
                        Val::Bool(if op == Op::Some { any } else { !any })
                    }
                }
            }
            Op::Reduce => {
                let items = self.arg(args, 0, scope)?;
                let mut accumulator = self.arg(args, 2, scope)?;
                let Some(items) = items.into_array_items() else {
                    return Ok(accumulator);
                };
                for current in &items {
                    accumulator = self.eval(
                        &args[1],
                        Scope::Reduce {
                            current,
                            accumulator: &accumulator,
                        },
                    )?;
                }
                accumulator
            }
            Op::Merge => {
                let mut out = Vec::new();
                for arg in args {
                    let v = self.eval(arg, scope)?;
                    if v.is_array() {
                        out.extend(v.into_array_items().unwrap_or_default());
                    } else {
                        out.push(v);
                    }
                }
                Val::List(out)
            }
            Op::In => {
                let needle = self.arg(args, 0, scope)?;
                let haystack = self.arg(args, 1, scope)?;
                Val::Bool(match &haystack {
                    Val::Str(s) => s.contains(needle.to_js_string().as_ref()),
                    Val::List(items) => items.iter().any(|i| strict_eq(&needle, i)),
                    Val::Json(Value::Array(items)) => {
                        items.iter().any(|i| strict_eq(&needle, &Val::from_json(i)))
                    }
                    _ => false,
                })
            }
            Op::Cat => {
                let mut out = String::new();
                for arg in args {
                    out.push_str(&self.eval(arg, scope)?.to_js_string());
                }
                Val::Str(Cow::Owned(out))
            }
            Op::Substr => {
                let source = self.arg(args, 0, scope)?.to_js_string();
                let start = self.arg(args, 1, scope)?.to_number();
                let length = if args.len() > 2 {
                    Some(self.arg(args, 2, scope)?.to_number())
                } else {
                    None
                };
                Val::Str(Cow::Owned(substr(&source, start, length)))
            }
            Op::Missing => Val::List(self.missing(args, scope)?),
            Op::MissingSome => {
                let need = self.arg(args, 0, scope)?.to_number();
                let keys = self.arg(args, 1, scope)?;
                let total = keys.array_len().unwrap_or(0) as f64;
                let missing = self.missing_keys(keys, scope);
                if total - missing.len() as f64 >= need {
                    Val::List(Vec::new())
                } else {
                    Val::List(missing)
                }
            }
            Op::Log => {
                let v = self.arg(args, 0, scope)?;
                tracing::debug!(value = %v.to_json(), "jsonlogic log");
                v
            }
            Op::StartsWith | Op::EndsWith => {
                let a = self.arg(args, 0, scope)?;
                let b = self.arg(args, 1, scope)?;
                Val::Bool(match (&a, &b) {
                    (Val::Str(s), Val::Str(p)) if op == Op::StartsWith => s.starts_with(p.as_ref()),
                    (Val::Str(s), Val::Str(p)) => s.ends_with(p.as_ref()),
                    _ => false,
                })
            }
        })
    }

    /// `missing`: keys come from the first argument when it is an array,
    /// otherwise from all arguments.
    fn missing(
        &mut self,
        args: &'a [Expr],
        scope: Scope<'_, 'a>,
    ) -> Result<Vec<Val<'a>>, EvalError> {
        if args.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.arg(args, 0, scope)?;
        if first.is_array() {
            return Ok(self.missing_keys(first, scope));
        }
        let mut keys = Vec::with_capacity(args.len());
        keys.push(first);
        for arg in args.iter().skip(1) {
            keys.push(self.eval(arg, scope)?);
        }
        Ok(self.missing_keys(Val::List(keys), scope))
    }

    fn missing_keys(&self, keys: Val<'a>, scope: Scope<'_, 'a>) -> Vec<Val<'a>> {
        let mut missing = Vec::new();
        for key in keys.into_array_items().unwrap_or_default() {
            let path = VarPath::parse(&key.to_js_string());
            let absent = match self.lookup(scope, &path) {
                None | Some(Val::Null) => true,
                Some(Val::Str(s)) => s.is_empty(),
                Some(_) => false,
            };
            if absent {
                missing.push(key);
            }
        }
        missing
    }
}

/// JavaScript `String.prototype.substr`, plus JSONLogic's negative length
/// ("leave that many characters off the end").
fn substr(source: &str, start: f64, length: Option<f64>) -> String {
    let chars: Vec<char> = source.chars().collect();
    let len = chars.len() as i64;
    let clamp_index = |n: f64| -> i64 {
        if n.is_nan() {
            0
        } else {
            n.trunc().clamp(-(len as f64), len as f64) as i64
        }
    };
    let mut from = clamp_index(start);
    if from < 0 {
        from = (len + from).max(0);
    }
    let tail = &chars[from as usize..];
    let take = match length {
        None => tail.len() as i64,
        Some(l) if l < 0.0 => (tail.len() as i64 + clamp_index(l)).max(0),
        Some(l) => clamp_index(l).max(0),
    };
    tail.iter().take(take as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::super::Rule;
    use super::*;
    use serde_json::json;

    fn run(rule: Value, data: Value) -> Value {
        let rule = Rule::compile(&rule).expect("compiles");
        evaluate(&rule.root, &data).expect("evaluates").to_json()
    }

    #[test]
    fn extensions() {
        let data = json!({"source": {"address": "10.1.2.3"}, "p": "/v1/kernels/abc"});
        assert_eq!(
            run(
                json!({"in_cidr": [{"var": "source.address"}, "10.0.0.0/8"]}),
                data.clone()
            ),
            json!(true)
        );
        assert_eq!(
            run(
                json!({"in_cidr": [{"var": "source.address"}, ["192.168.0.0/16", "fd00::/8"]]}),
                data.clone()
            ),
            json!(false)
        );
        assert_eq!(
            run(
                json!({"in_cidr": ["not-an-ip", "10.0.0.0/8"]}),
                data.clone()
            ),
            json!(false)
        );
        assert_eq!(
            run(
                json!({"matches": [{"var": "p"}, "^/v1/kernels/[a-z]+$"]}),
                data.clone()
            ),
            json!(true)
        );
        assert_eq!(
            run(json!({"starts_with": [{"var": "p"}, "/v1/"]}), data.clone()),
            json!(true)
        );
        assert_eq!(
            run(json!({"ends_with": [{"var": "p"}, "/xyz"]}), data.clone()),
            json!(false)
        );
        assert_eq!(run(json!({"starts_with": [5, "5"]}), data), json!(false));
    }

    #[test]
    fn step_budget_stops_runaway_iteration() {
        let big: Vec<u32> = (0..300_000).collect();
        let rule =
            Rule::compile(&json!({"map": [{"var": "xs"}, {"+": [{"var": ""}, 1]}]})).unwrap();
        let data = json!({ "xs": big });
        assert_eq!(
            evaluate(&rule.root, &data).err(),
            Some(EvalError::BudgetExceeded)
        );
    }

    #[test]
    fn substr_follows_javascript() {
        assert_eq!(substr("jsonlogic", 4.0, None), "logic");
        assert_eq!(substr("jsonlogic", -5.0, Some(-2.0)), "log");
        assert_eq!(substr("jsonlogic", 1.0, Some(-5.0)), "son");
        assert_eq!(substr("abc", 10.0, None), "");
    }
}
