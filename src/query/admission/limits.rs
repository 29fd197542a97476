//! The shape a SQL statement may have: its size, how deep its expressions
//! nest, how many set operations and tables it combines.
//!
//! The parser builds `a + b + … + z` (any left-associative operator chain:
//! `OR`, `AND`, `||`, `::`, …) iteratively, so its depth is bounded only by
//! the text; everything after it — planning, optimizing, executing, even
//! formatting an expression's name — recurses once per level, and enough
//! levels overflow a thread's stack, which aborts the whole process. So the
//! parsed statement is measured here, with a walk that stops as soon as a
//! limit is passed (it never recurses deeper than the limit), before anything
//! else touches it. The worker threads' stack (see `main.rs`) is sized for
//! these limits with room to spare.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SetExpr, TableFactor, Value, Values, Visit, VisitMut, Visitor, VisitorMut,
};

use crate::error::{Error, Result};

/// Longest statement accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// Deepest expression nesting accepted: `a OR b OR … ` may have this many terms.
pub const MAX_EXPR_DEPTH: usize = 500;

/// Most `UNION` / `EXCEPT` / `INTERSECT` operations in a statement.
pub const MAX_SET_OPERATIONS: usize = 1000;

/// Most tables, subqueries and table functions in `FROM` clauses of a statement.
pub const MAX_TABLES: usize = 128;

/// Refuses statement text longer than [`MAX_SQL_BYTES`], before it is parsed.
pub fn check_text(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::invalid(format!(
            "the statement is {} bytes long; forkline accepts at most {} KiB of SQL",
            sql.len(),
            MAX_SQL_BYTES >> 10
        )));
    }
    Ok(())
}

/// The parsed statement, unless it passes the limits above. A refused one
/// is taken apart without recursion: dropping it whole would recurse once per
/// level, as deep as the text allows.
pub fn check_statement(statement: Statement) -> Result<Statement> {
    match shape_of(&statement) {
        Ok(()) => Ok(statement),
        Err(e) => {
            if let Statement::Statement(mut statement) = statement {
                dismantle(&mut statement);
            }
            Err(e)
        }
    }
}

fn shape_of(statement: &Statement) -> Result<()> {
    let mut shape = Shape::default();
    let walked = match statement {
        Statement::Statement(statement) => statement.visit(&mut shape),
        Statement::Explain(explain) => return shape_of(&explain.statement),
        // Refused as writes anyway; refused here before anything plans them.
        Statement::CopyTo(_) => return Err(not_a_query("COPY")),
        Statement::CreateExternalTable(_) => return Err(not_a_query("CREATE EXTERNAL TABLE")),
        Statement::Reset(_) => return Err(not_a_query("RESET")),
    };
    match walked {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(why) => Err(Error::invalid(why)),
    }
}

fn not_a_query(what: &str) -> Error {
    Error::invalid(format!("only read-only queries are accepted (not {what})"))
}

#[derive(Default)]
struct Shape {
    depth: usize,
    set_operations: usize,
    tables: usize,
}

impl Visitor for Shape {
    type Break = String;

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(format!(
                "the query nests expressions more than {MAX_EXPR_DEPTH} levels deep (a chain \
                 of more than {MAX_EXPR_DEPTH} operators such as `a OR b OR …`); use \
                 `x IN (…)` lists or split the query"
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    // A chain of set operations is a left-deep tree that the visitor would
    // descend before any hook sees it: count it here, without recursion.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        let mut pending = vec![query.body.as_ref()];
        while let Some(set) = pending.pop() {
            if let SetExpr::SetOperation { left, right, .. } = set {
                self.set_operations += 1;
                if self.set_operations > MAX_SET_OPERATIONS {
                    return ControlFlow::Break(format!(
                        "the query combines more than {MAX_SET_OPERATIONS} UNION / EXCEPT / \
                         INTERSECT operations; split it"
                    ));
                }
                pending.push(left);
                pending.push(right);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<String> {
        self.tables += 1;
        if self.tables > MAX_TABLES {
            return ControlFlow::Break(format!(
                "the query reads more than {MAX_TABLES} tables, subqueries or table functions; \
                 split it"
            ));
        }
        ControlFlow::Continue(())
    }
}

/// Moves every expression out of `statement`, then out of each expression
/// moved, and so on, so each is dropped with no expression left inside it;
/// chains of set operations are taken apart the same way. The walks recurse
/// only through the rest (queries, `FROM` items), whose nesting the parser limits.
fn dismantle(statement: &mut impl VisitMut) {
    let mut taken = Taken {
        exprs: Vec::new(),
        keep_root: false,
    };
    let _ = VisitMut::visit(statement, &mut taken);
    while let Some(mut expr) = taken.exprs.pop() {
        taken.keep_root = true;
        let _ = VisitMut::visit(&mut expr, &mut taken);
    }
}

struct Taken {
    exprs: Vec<Expr>,
    /// Set while the walk starts at an expression already taken out.
    keep_root: bool,
}

impl VisitorMut for Taken {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if std::mem::take(&mut self.keep_root) {
            return ControlFlow::Continue(());
        }
        self.exprs
            .push(std::mem::replace(expr, Expr::value(Value::Null)));
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let nothing = SetExpr::Values(Values {
            explicit_row: false,
            value_keyword: false,
            rows: Vec::new(),
        });
        let mut sets = vec![std::mem::replace(&mut query.body, Box::new(nothing))];
        while let Some(set) = sets.pop() {
            match *set {
                SetExpr::SetOperation { left, right, .. } => sets.extend([left, right]),
                mut other => {
                    let _ = VisitMut::visit(&mut other, self);
                }
            }
        }
        ControlFlow::Continue(())
    }
}
