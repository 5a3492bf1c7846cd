//! The fleet: host names, the inventory read from a flake, and host selectors.

pub mod background;
pub mod cache;
mod colmena;
mod deploy_rs;
pub mod eval;
pub mod eval_cache;
pub mod inventory;
mod name;
pub mod pending;
mod profiles;
mod schema;
pub mod selector;
mod suggest;
#[cfg(test)]
mod testing;
pub mod toplevels;
mod value;

pub use cache::BinaryCache;
pub use colmena::LOCAL_ONLY;
pub use inventory::{
    ActivateDefaults, BuildOn, Builder, Evaluation, Host, Inventory, Profile, ProfileKind,
};
pub use name::HostName;
pub use schema::SYSTEM_PROFILE;
pub use selector::{Selector, SelectorError};
pub use toplevels::{EvalOptions, Evaluated};

/// `unknown specialisation 'x' of /nix/store/... (did you mean 'y'?); known specialisations: ...`.
pub fn unknown_specialisation(name: &str, path: &str, known: Vec<&str>) -> String {
    suggest::unknown("specialisation", name, known.iter().copied()).replacen(
        &format!("'{name}'"),
        &format!("'{name}' of {path}"),
        1,
    )
}

/// `unknown profile 'x' (did you mean 'y'?); known profiles: ...`.
pub fn unknown_profile<'a>(name: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> String {
    suggest::unknown("profile", name, known)
}

#[cfg(test)]
mod migration_docs_tests;
