//! `cuttle secrets reseal`: the last step of a master key rotation. Every sensitive value in
//! every variable set and snapshot, and every tenant's sensitive template values, is sealed
//! again under the current key, so the retired key can
//! be dropped from `secrets.retired_keys`. Values already under the current key are left alone;
//! each document is rewritten in its own transaction, so the command can be run again after an
//! interruption.

use crate::projects::{VARIABLES_KIND, VARIABLES_SNAPSHOT_KIND};
use cuttle_secrets::Keyring;
use cuttle_store::documents::{self, Replacement};
use cuttle_store::{Store, TransactionTrait};
use cuttle_wire::resources::{StoredTenantVariables, VariableSet};

/// What a reseal did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Variable sets and snapshots rewritten.
    pub documents: usize,
    /// Sensitive values moved to the current key.
    pub values: usize,
}

/// Moves every stored sensitive value to `keyring`'s current key.
pub async fn reseal_all(store: &Store, keyring: &Keyring) -> anyhow::Result<Resealed> {
    let mut done = Resealed::default();
    for kind in [VARIABLES_KIND, VARIABLES_SNAPSHOT_KIND] {
        for listed in documents::list_in_all_spaces(store.conn(), kind).await? {
            let txn = store.conn().begin().await?;
            let space = cuttle_domain::SpaceId::parse(&listed.space_id)?;
            // Read again inside the transaction: the set may have changed since the listing.
            let Some(doc) = documents::get(&txn, &space, kind, &listed.id).await? else {
                continue;
            };
            let mut set: VariableSet = documents::decode(&doc)?;
            let mut changed = 0;
            for variable in &mut set.variables {
                let Some(value) = variable.value.as_deref() else {
                    continue;
                };
                if !variable.is_sensitive || !Keyring::is_sealed(value) {
                    continue;
                }
                let moved = keyring.reseal(value).map_err(|err| {
                    anyhow::anyhow!(
                        "variable '{}' of {} {} cannot be opened: {err}",
                        variable.name,
                        kind,
                        doc.id
                    )
                })?;
                if moved != value {
                    variable.value = Some(moved);
                    changed += 1;
                }
            }
            if changed > 0 {
                documents::replace(
                    &txn,
                    &space,
                    kind,
                    &doc.id,
                    Replacement {
                        name: doc.name.clone(),
                        unique_key: doc.unique_key.clone(),
                        sort_order: doc.sort_order,
                        data: documents::encode(&set),
                        expected_version: Some(doc.version),
                    },
                    "",
                )
                .await?;
                done.documents += 1;
                done.values += changed;
            }
            txn.commit().await?;
        }
    }
    reseal_tenant_variables(store, keyring, &mut done).await?;
    Ok(done)
}

/// Reseals tenants' values for sensitive templates: the only sealed values they hold (the api
/// refuses plain values that look sealed).
async fn reseal_tenant_variables(
    store: &Store,
    keyring: &Keyring,
    done: &mut Resealed,
) -> anyhow::Result<()> {
    let kind = crate::tenants::TENANT_VARIABLES_KIND;
    for listed in documents::list_in_all_spaces(store.conn(), kind).await? {
        let txn = store.conn().begin().await?;
        let space = cuttle_domain::SpaceId::parse(&listed.space_id)?;
        let Some(doc) = documents::get(&txn, &space, kind, &listed.id).await? else {
            continue;
        };
        let mut stored: StoredTenantVariables = documents::decode(&doc)?;
        let mut changed = 0;
        let values = stored
            .project_variables
            .values_mut()
            .flat_map(|by_env| by_env.values_mut())
            .chain(stored.library_variables.values_mut())
            .flat_map(|by_template| by_template.iter_mut())
            .map(|(template, value)| (template.as_str(), value))
            .chain(
                stored
                    .scoped_library_variables
                    .iter_mut()
                    .map(|scoped| (scoped.template_id.as_str(), &mut scoped.value)),
            );
        for (template, value) in values {
            if !Keyring::is_sealed(value) {
                continue;
            }
            let moved = keyring.reseal(value).map_err(|err| {
                anyhow::anyhow!(
                    "the value of template {template} in {} cannot be opened: {err}",
                    doc.id
                )
            })?;
            if &moved != value {
                *value = moved;
                changed += 1;
            }
        }
        if changed > 0 {
            documents::replace(
                &txn,
                &space,
                kind,
                &doc.id,
                Replacement {
                    name: doc.name.clone(),
                    unique_key: doc.unique_key.clone(),
                    sort_order: doc.sort_order,
                    data: documents::encode(&stored),
                    expected_version: Some(doc.version),
                },
                "",
            )
            .await?;
            done.documents += 1;
            done.values += changed;
        }
        txn.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuttle_store::documents::NewDocument;
    use cuttle_wire::resources::Variable;

    fn key() -> String {
        Keyring::generate_key().expect("key")
    }

    #[tokio::test]
    async fn every_sensitive_value_moves_to_the_current_key_and_plain_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("db.sqlite").display()
        );
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let space = cuttle_domain::SpaceId::parse("Spaces-1").expect("space");
        let (old, new) = (key(), key());
        let before = Keyring::new(&old, []).expect("old");
        let set = VariableSet {
            id: "variableset-Projects-1".into(),
            variables: vec![
                Variable {
                    name: "Password".into(),
                    value: Some(before.seal("pw").expect("seal")),
                    is_sensitive: true,
                    ..Variable::default()
                },
                Variable {
                    name: "Plain".into(),
                    value: Some("cuttle-sealed:v1:looks:sealed".into()),
                    ..Variable::default()
                },
            ],
            ..VariableSet::default()
        };
        for (id, kind) in [
            ("variableset-Projects-1", VARIABLES_KIND),
            ("variableset-Projects-1-s-1-ABCDE", VARIABLES_SNAPSHOT_KIND),
        ] {
            documents::insert(
                store.conn(),
                NewDocument {
                    id: id.into(),
                    space_id: space.clone(),
                    kind,
                    name: id.into(),
                    parent_id: None,
                    unique_key: None,
                    sort_order: 0,
                    data: documents::encode(&set),
                },
                "",
            )
            .await
            .expect("insert");
        }
        // Without the old key nothing can be moved, and the set that failed is left as it was.
        let only_new = Keyring::new(&new, []).expect("new");
        assert!(reseal_all(&store, &only_new).await.is_err());
        let untouched = documents::list_in_all_spaces(store.conn(), VARIABLES_KIND)
            .await
            .expect("list");
        let untouched: VariableSet = documents::decode(&untouched[0]).expect("decode");
        let value = untouched.variables[0].value.as_deref().expect("value");
        assert_eq!(before.open(value).expect("still under the old key"), "pw");

        let rotating = Keyring::new(&new, [old.as_str()]).expect("keys");
        let done = reseal_all(&store, &rotating).await.expect("reseal");
        assert_eq!(
            done,
            Resealed {
                documents: 2,
                values: 2
            }
        );
        for kind in [VARIABLES_KIND, VARIABLES_SNAPSHOT_KIND] {
            let docs = documents::list_in_all_spaces(store.conn(), kind)
                .await
                .expect("list");
            let set: VariableSet = documents::decode(&docs[0]).expect("decode");
            let password = set.variables[0].value.as_deref().expect("value");
            assert_eq!(
                only_new.open(password).expect("opens with the new key"),
                "pw"
            );
            assert_eq!(
                set.variables[1].value.as_deref(),
                Some("cuttle-sealed:v1:looks:sealed")
            );
        }
        // Run again: nothing left to move.
        assert_eq!(
            reseal_all(&store, &rotating).await.expect("reseal"),
            Resealed::default()
        );
    }
}
