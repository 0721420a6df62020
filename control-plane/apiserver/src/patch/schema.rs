//! Where a value of a patched object sits in the API types: which OpenAPI definition
//! describes it, so that the strategic merge patch can look up the patch metadata of its
//! fields in [`super::meta`].
//!
//! The definitions come from k8s-openapi's `schemars` impls: one generator is asked for the
//! schema of every root kind once (lazily, on the first strategic merge patch), and the
//! resulting definitions (`io.k8s.api.core.v1.PodSpec`, …) are kept for the life of the
//! process. Navigation follows `properties`, `items`, `additionalProperties` and `$ref`s, so
//! every nested type is reached from its root without a hand-written field table.

use std::sync::OnceLock;

use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{Map, Value};

/// The definitions of every type reachable from a root kind, and the roots themselves.
struct Registry {
    definitions: Map<String, Value>,
    /// `(group, kind, definition name)`.
    roots: Vec<(&'static str, &'static str, String)>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(build_registry)
}

fn build_registry() -> Registry {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut roots = Vec::new();
    root::<core::v1::Namespace>(&mut generator, &mut roots, "", "Namespace");
    root::<core::v1::Node>(&mut generator, &mut roots, "", "Node");
    root::<core::v1::Pod>(&mut generator, &mut roots, "", "Pod");
    root::<core::v1::Service>(&mut generator, &mut roots, "", "Service");
    root::<core::v1::Endpoints>(&mut generator, &mut roots, "", "Endpoints");
    root::<core::v1::Event>(&mut generator, &mut roots, "", "Event");
    root::<core::v1::ConfigMap>(&mut generator, &mut roots, "", "ConfigMap");
    root::<core::v1::Secret>(&mut generator, &mut roots, "", "Secret");
    root::<apps::v1::Deployment>(&mut generator, &mut roots, "apps", "Deployment");
    root::<apps::v1::ReplicaSet>(&mut generator, &mut roots, "apps", "ReplicaSet");
    root::<coordination::v1::Lease>(&mut generator, &mut roots, "coordination.k8s.io", "Lease");
    root::<discovery::v1::EndpointSlice>(
        &mut generator,
        &mut roots,
        "discovery.k8s.io",
        "EndpointSlice",
    );
    // The scale subresource of deployments and replica sets (`kubectl scale`).
    root::<autoscaling::v1::Scale>(&mut generator, &mut roots, "autoscaling", "Scale");
    Registry {
        // Taken without the generator's transforms: they only restyle `$ref` siblings and
        // nullability, which navigation handles either way.
        definitions: generator.take_definitions(false),
        roots,
    }
}

fn root<T: JsonSchema>(
    generator: &mut SchemaGenerator,
    roots: &mut Vec<(&'static str, &'static str, String)>,
    group: &'static str,
    kind: &'static str,
) {
    // Registers T and everything it references in the generator's definitions.
    generator.subschema_for::<T>();
    roots.push((group, kind, T::schema_name().into_owned()));
}

/// The OpenAPI definition name of a root kind (`("apps", "Deployment")` →
/// `io.k8s.api.apps.v1.Deployment`), or `None` for a kind without a strategic merge schema.
pub fn root_definition(group: &str, kind: &str) -> Option<&'static str> {
    registry()
        .roots
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, name)| name.as_str())
}

/// The schema of one value of a patched object; `Shape::UNKNOWN` below fields the schema
/// does not describe (they merge as plain JSON: maps recursively, lists replaced).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    schema: Option<&'static Value>,
    /// The definition's name when `schema` is a definition itself (a root) rather than a
    /// `$ref` to one.
    name: Option<&'static str>,
}

impl Shape {
    /// A value the schema does not describe.
    pub const UNKNOWN: Shape = Shape {
        schema: None,
        name: None,
    };

    fn of(schema: &'static Value) -> Shape {
        Shape {
            schema: Some(schema),
            name: None,
        }
    }

    /// The shape of a whole object of a root kind.
    pub fn root(group: &str, kind: &str) -> Option<Shape> {
        let name = root_definition(group, kind)?;
        let (name, schema) = registry().definitions.get_key_value(name)?;
        Some(Shape {
            schema: Some(schema),
            name: Some(name.as_str()),
        })
    }

    /// Follows `$ref`s (and a lone `allOf` wrapping one) to the schema that describes the
    /// value; returns it with the name of the last definition reached.
    fn resolve(self) -> Option<(&'static Value, Option<&'static str>)> {
        let mut schema = self.schema?;
        let mut name = self.name;
        // Definitions never chain more than a couple of references; the bound only guards
        // against a cycle of bare references.
        for _ in 0..8 {
            if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
                let target = reference.rsplit('/').next().unwrap_or(reference);
                let (key, def) = registry().definitions.get_key_value(target)?;
                name = Some(key.as_str());
                schema = def;
            } else if let Some([only]) = schema
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                schema = only;
            } else {
                break;
            }
        }
        Some((schema, name))
    }

    /// The definition that describes the value (`io.k8s.api.core.v1.PodSpec`), if it is an
    /// object of a named type.
    pub fn definition(self) -> Option<&'static str> {
        self.resolve().and_then(|(_, name)| name)
    }

    /// The shape of `field` of this object: its property, or the value schema of a map
    /// (`additionalProperties`).
    pub fn field(self, field: &str) -> Shape {
        let Some((schema, _)) = self.resolve() else {
            return Shape::UNKNOWN;
        };
        if let Some(property) = schema.get("properties").and_then(|p| p.get(field)) {
            return Shape::of(property);
        }
        match schema.get("additionalProperties") {
            Some(values @ Value::Object(_)) => Shape::of(values),
            _ => Shape::UNKNOWN,
        }
    }

    /// The shape of the elements of this list.
    pub fn items(self) -> Shape {
        match self.resolve().and_then(|(schema, _)| schema.get("items")) {
            Some(items @ Value::Object(_)) => Shape::of(items),
            _ => Shape::UNKNOWN,
        }
    }
}
