//! PostHog's `handleIdentifyOrAlias` and `mergePeople`, inside a commit's person work: which
//! links and merges are refused, and how two persons become one.

use heed::RwTxn;

use super::{Applied, EventOfPerson, PersonWarning, PersonWork};
use crate::core::error::{CoreError, Result};
use crate::core::person_event::{is_illegal_merge_id, IdentityKind, IdentityOp, PersonEvent};

impl PersonWork<'_> {
    fn mark_identified(&mut self, id: u64) -> Result<u64> {
        if !self.loaded(id)?.person.is_identified {
            let person = self.touch(id)?;
            person.is_identified = true;
            person.version += 1;
        }
        Ok(id)
    }

    /// PostHog's `handleIdentifyOrAlias`: returns the person the event goes to, or `None` when
    /// the link was refused and the event goes to its own distinct id's person as usual.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn identify(
        &mut self,
        txn: &mut RwTxn,
        project: u32,
        team_key: &str,
        of: &EventOfPerson<'_>,
        op: &IdentityOp,
        fields: &PersonEvent,
        applied: &mut Applied,
    ) -> Result<Option<u64>> {
        let distinct_id = of.distinct_id;
        if is_illegal_merge_id(&op.other) || is_illegal_merge_id(distinct_id) {
            self.warn(PersonWarning::CannotMergeWithIllegalDistinctId);
            return Ok(None);
        }
        let event = match op.kind {
            IdentityKind::Identify => "$identify",
            IdentityKind::Alias => "$create_alias",
            IdentityKind::MergeDangerously => "$merge_dangerously",
        };
        let other = self.resolve(txn, project, &op.other)?;
        let into = self.resolve(txn, project, distinct_id)?;
        let id = match (other, into) {
            (None, None) => {
                // As PostHog does, the person takes its uuid from the other id when only that
                // one was used by personless events: the rows they wrote already carry it.
                let uuid_of = if self.was_personless(txn, project, &op.other)?
                    && !self.was_personless(txn, project, distinct_id)?
                {
                    op.other.as_str()
                } else {
                    distinct_id
                };
                let id = self.create(
                    txn,
                    project,
                    team_key,
                    uuid_of,
                    &[distinct_id, &op.other],
                    of,
                    &fields.update,
                )?;
                self.touch(id)?.is_identified = true;
                return Ok(Some(id));
            }
            (Some(id), None) | (None, Some(id)) => {
                let new_id = if other.is_some() {
                    distinct_id
                } else {
                    op.other.as_str()
                };
                self.link(txn, project, new_id, id)?;
                let person = self.touch(id)?;
                person.distinct_ids.push(new_id.to_owned());
                person.is_identified = true;
                person.version += 1;
                id
            }
            (Some(other), Some(into)) if other == into => self.mark_identified(into)?,
            (Some(other), Some(into)) => {
                if self.loaded(other)?.person.is_identified && op.kind != IdentityKind::MergeDangerously {
                    // PostHog refuses the merge but still counts the event's own person as
                    // identified: the event came from someone who identified.
                    self.warn(PersonWarning::CannotMergeAlreadyIdentified);
                    self.mark_identified(into)?;
                    return Ok(None);
                }
                let removed = self
                    .persons
                    .remove(&other)
                    .ok_or_else(|| CoreError::Store(format!("person {other} is not loaded")))?;
                if removed.dirty {
                    self.dirty.retain(|dirty| *dirty != other);
                }
                let mut gone = removed.person;
                self.deleted.push(other);
                for moved in &gone.distinct_ids {
                    self.link(txn, project, moved, into)?;
                }
                super::hash_key_overrides::move_overrides(self.dbs.overrides, txn, other, into)?;
                self.touch(into)?.absorb(&gone);
                gone.version += 1;
                applied.merged_away = Some(gone);
                into
            }
        };
        self.touch(id)?.apply(event, &fields.update);
        Ok(Some(id))
    }
}
