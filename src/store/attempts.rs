//! Failure counters with their locks, counted in one statement.
//!
//! Accounts (`users`) and trusted devices (`devices`) keep the same three
//! columns: `failed_attempts`, `last_failure_at`, `locked_until`. One UPDATE
//! checks the lock, counts the failure and sets the lock it makes due, so
//! concurrent attempts can neither slip past a lock nor overshoot the
//! schedule. The schedule arrives as a [`LockPlan`] with every possible lock
//! end precomputed by the caller (time is a parameter, and SQL needs no
//! date arithmetic on either backend).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{CaseStatement, Expr};
use sea_orm::{ColumnTrait, EntityTrait, ExprTrait as _, QueryFilter};

use super::StoreError;
use super::db::{Db, Scope};
use super::users::{AUTOMATIC_LOCK, HARD_LOCK};

type Result<T> = std::result::Result<T, StoreError>;

/// The lock schedule at one instant.
#[derive(Debug, Clone)]
pub struct LockPlan {
    pub now: DateTime<Utc>,
    /// A run whose last failure is older than this starts again at 1.
    pub decay_before: DateTime<Utc>,
    pub threshold: i32,
    pub hard_limit: i32,
    /// Lock ends for the `threshold + i`-th failure; the last repeats.
    pub step_ends: Vec<DateTime<Utc>>,
    pub hard_end: DateTime<Utc>,
}

/// What counting did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted: the run's length now, and the lock it set, if any.
    Yes { failures: i32, locked_until: Option<DateTime<Utc>>, hard: bool },
    /// A lock was in force: nothing counted.
    Locked,
    /// No such row.
    Missing,
}

/// The run's length after this failure, as an expression.
fn next_count(failed: Expr, last: Expr, plan: &LockPlan) -> Expr {
    CaseStatement::new()
        .case(last.clone().is_not_null().and(last.gte(plan.decay_before)), failed.add(1))
        .finally(Expr::val(1))
        .into()
}

fn lock_end(next: &Expr, locked_until: Expr, plan: &LockPlan) -> Expr {
    let mut case = CaseStatement::new().case(next.clone().gte(plan.hard_limit), Expr::val(plan.hard_end));
    for (i, end) in plan.step_ends.iter().enumerate().rev() {
        let at = plan.threshold + i32::try_from(i).unwrap_or(i32::MAX);
        case = case.case(next.clone().gte(at), Expr::val(*end));
    }
    case.finally(locked_until).into()
}

/// The counter columns of a table.
pub struct Columns<C> {
    pub id: C,
    pub failed_attempts: C,
    pub last_failure_at: C,
    pub locked_until: C,
    /// Accounts only: why they are locked.
    pub lock_reason: Option<C>,
}

/// Counts one failure of the row `key` in `E` (users or devices), returning
/// the row as updated. With `only_if_unlocked`, a row whose lock is in
/// force is left alone.
pub async fn count<E>(
    db: &Db,
    scope: Option<Scope<'_>>,
    cols: &Columns<E::Column>,
    key: sea_orm::Value,
    plan: &LockPlan,
    only_if_unlocked: bool,
    failures_of: impl Fn(&E::Model) -> i32,
) -> Result<Counted>
where
    E: EntityTrait,
    E::Model: sea_orm::FromQueryResult + Send + Sync,
{
    let next = next_count(Expr::col(cols.failed_attempts), Expr::col(cols.last_failure_at), plan);
    let mut update = E::update_many()
        .col_expr(cols.failed_attempts, next.clone())
        .col_expr(cols.last_failure_at, Expr::val(plan.now))
        .col_expr(cols.locked_until, lock_end(&next, Expr::col(cols.locked_until), plan))
        .filter(cols.id.eq(key.clone()));
    if let Some(reason) = cols.lock_reason {
        let reason_case: Expr = CaseStatement::new()
            .case(next.clone().gte(plan.hard_limit), Expr::val(HARD_LOCK))
            .case(next.clone().gte(plan.threshold), Expr::val(AUTOMATIC_LOCK))
            .finally(Expr::col(reason))
            .into();
        update = update.col_expr(reason, reason_case);
    }
    if only_if_unlocked {
        update = update
            .filter(sea_orm::Condition::any().add(cols.locked_until.is_null()).add(cols.locked_until.lte(plan.now)));
    }
    // A per-user table is written under its owner's scope (one transaction
    // for the update and the read after it).
    let missing = E::find().filter(cols.id.eq(key));
    let (returned, exists) = match scope {
        Some(scope) => {
            let txn = db.begin_write_as(scope).await?;
            let returned = update.exec_with_returning(&*txn).await?;
            let exists = !returned.is_empty() || missing.one(&*txn).await?.is_some();
            txn.commit().await?;
            (returned, exists)
        }
        None => {
            let returned = update.exec_with_returning(db.conn()).await?;
            let exists = !returned.is_empty() || missing.one(db.conn()).await?.is_some();
            (returned, exists)
        }
    };
    if let Some(row) = returned.first() {
        let failures = failures_of(row);
        let locked_until = (failures >= plan.threshold).then(|| {
            if failures >= plan.hard_limit {
                plan.hard_end
            } else {
                let i = usize::try_from(failures - plan.threshold).unwrap_or(0).min(plan.step_ends.len() - 1);
                plan.step_ends[i]
            }
        });
        return Ok(Counted::Yes { failures, locked_until, hard: failures >= plan.hard_limit });
    }
    Ok(if exists { Counted::Locked } else { Counted::Missing })
}
