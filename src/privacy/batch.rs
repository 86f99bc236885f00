//! The policy applied to Arrow batches of the `messages` and `users` tables: columns replaced,
//! rewritten or left out. Pseudonyms are computed once per run of equal ids (rows arrive grouped
//! by user).

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, MapArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{ArrowError, Schema, SchemaRef};

use super::{IdColumn, Privacy};
use crate::schema;

/// The last id seen and its pseudonym.
#[derive(Default)]
struct Memo {
    id: String,
    pseudonym: String,
}

impl Memo {
    fn get(&mut self, p: &Privacy, id: &str) -> &str {
        if self.id != id || self.pseudonym.is_empty() {
            self.id = id.to_owned();
            self.pseudonym = p.pseudonym(id);
        }
        &self.pseudonym
    }
}

fn map_strings(array: &ArrayRef, mut f: impl FnMut(usize, &str) -> Option<String>) -> ArrayRef {
    let a = array.as_string::<i32>();
    let out: StringArray = (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                return None;
            }
            let v = a.value(i);
            Some(f(i, v).unwrap_or_else(|| v.to_owned()))
        })
        .collect();
    Arc::new(out)
}

impl Privacy {
    /// `schema` without the dropped columns.
    pub fn schema(&self, schema: &SchemaRef) -> SchemaRef {
        if self.policy.drop_columns.is_empty() {
            return schema.clone();
        }
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| !self.drops(f.name()))
            .cloned()
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// A `messages` batch as the output may carry it.
    ///
    /// # Errors
    /// Arrow errors (a batch not of the `messages` schema).
    pub fn messages(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let strings = |name: &str| {
            batch
                .column_by_name(name)
                .map(|c| c.as_string::<i32>().clone())
        };
        let users = strings(schema::CHANNEL_USER_ID);
        let user_ids = strings(schema::USER_ID);
        let ids_of = |i: usize| -> Vec<&str> {
            let mut ids = Vec::with_capacity(2);
            if self.pseudonymizes(IdColumn::ChannelUserId)
                && let Some(u) = &users
            {
                ids.push(u.value(i));
            }
            if self.pseudonymizes(IdColumn::UserId)
                && let Some(u) = &user_ids
                && !u.is_null(i)
            {
                ids.push(u.value(i));
            }
            ids
        };
        let keyed_ids = self.pseudonymizes(IdColumn::ChannelUserId);
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if self.drops(field.name()) {
                continue;
            }
            let new = match field.name().as_str() {
                schema::MESSAGE_ID if keyed_ids => {
                    map_strings(array, |_, v| Some(self.keyed("message_id", v)))
                }
                schema::CHANNEL_USER_ID if keyed_ids => {
                    let mut memo = Memo::default();
                    map_strings(array, |_, v| Some(memo.get(self, v).to_owned()))
                }
                schema::USER_ID if self.pseudonymizes(IdColumn::UserId) => {
                    let mut memo = Memo::default();
                    map_strings(array, |_, v| Some(memo.get(self, v).to_owned()))
                }
                schema::CONTENT | schema::TEXT => map_strings(array, |i, v| {
                    let replaced = self.replace_ids(v, &ids_of(i));
                    match self.redact(&replaced) {
                        Cow::Owned(s) => Some(s),
                        Cow::Borrowed(_) => {
                            matches!(replaced, Cow::Owned(_)).then(|| replaced.clone().into_owned())
                        }
                    }
                }),
                schema::RAW_JSON => map_strings(array, |i, v| {
                    let replaced = self.replace_ids(v, &ids_of(i));
                    self.redact_json(&replaced).or_else(|| {
                        matches!(replaced, Cow::Owned(_)).then(|| replaced.clone().into_owned())
                    })
                }),
                _ => array.clone(),
            };
            columns.push(new);
        }
        RecordBatch::try_new(self.schema(&batch.schema()), columns)
    }

    /// A `users` batch as the output may carry it.
    ///
    /// # Errors
    /// Arrow errors (a batch not of the `users` schema).
    pub fn users(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if self.drops(field.name()) {
                continue;
            }
            let new = match field.name().as_str() {
                schema::CHANNEL_USER_ID if self.pseudonymizes(IdColumn::ChannelUserId) => {
                    map_strings(array, |_, v| Some(self.pseudonym(v)))
                }
                schema::USER_NAME if self.pseudonymizes(IdColumn::UserName) => {
                    map_strings(array, |_, v| Some(self.pseudonym(v)))
                }
                schema::ATTRIBUTES if !self.policy.redact.is_empty() => {
                    self.redact_map_values(array)?
                }
                _ => array.clone(),
            };
            columns.push(new);
        }
        RecordBatch::try_new(self.schema(&batch.schema()), columns)
    }

    /// A map column with its values redacted.
    fn redact_map_values(&self, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
        let map = array.as_map();
        let entries = map.entries();
        let values = map_strings(entries.column(1), |_, v| match self.redact(v) {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        });
        let entries = StructArray::try_new(
            entries.fields().clone(),
            vec![entries.column(0).clone(), values],
            entries.nulls().cloned(),
        )?;
        let (field, offsets, _, nulls, ordered) = map.clone().into_parts();
        Ok(Arc::new(MapArray::try_new(
            field, offsets, entries, nulls, ordered,
        )?))
    }
}
