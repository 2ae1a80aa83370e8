//! Template evaluation throughput: a 1,000-variable set resolved, and a 100 KB file substituted.
//!
//! Run with `cargo bench -p cuttle-template --bench evaluate`. The inputs are generated
//! deterministically, and each is checked once, outside the timed loops, to be fully resolved,
//! so a bench cannot silently measure an error path (lenient evaluation returns the template
//! unchanged when it fails).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use cuttle_template::VariableDictionary;

/// Variables in the resolved set.
const VARIABLES: usize = 1_000;
/// Services in the set, ten variables each; the rest are project- and environment-wide.
const SERVICES: usize = 98;
/// Size the substituted file is grown to.
const FILE_BYTES: usize = 100 * 1024;

fn service(index: usize) -> String {
    format!("svc-{index:03}")
}

/// A deployment-like variable set: 20 project and environment variables, then ten per service.
/// About half the values are plain text; the rest reference others, some through filters, up to
/// four levels deep (`HealthUrl` → `Url` → `Host` → `Domain` → `Octopus.Environment.Name`).
fn variables() -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("Octopus.Environment.Name", "Production"),
        ("Octopus.Project.Name", "Cuttle Web"),
        ("Octopus.Release.Number", "2024.11.3"),
        ("Octopus.Deployment.Id", "Deployments-4711"),
        ("Octopus.Tenant.Name", "Contoso"),
        ("Region", "westeurope"),
        ("ApiVersion", "3"),
        (
            "Domain",
            "#{Octopus.Environment.Name | ToLower}.#{Region}.example.com",
        ),
        ("Db.Host", "sql-#{Region}.#{Domain}"),
        ("Db.User", "app_#{Octopus.Tenant.Name | ToLower}"),
        ("Db.Password", "p@ss\"word;with=specials"),
        ("Db.Port", "1433"),
        ("LogLevel", "Warning"),
        ("Cdn.Url", "https://cdn.#{Domain}/#{Octopus.Release.Number}"),
        ("Smtp.Host", "smtp.#{Domain}"),
        ("Smtp.Port", "587"),
        ("FeatureFlags", "search,billing,reports"),
        ("Owner.Email", "ops@example.com"),
        (
            "Banner",
            "#{Octopus.Project.Name | ToUpper} #{Octopus.Release.Number}",
        ),
        ("Timeout", "30"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    for index in 0..SERVICES {
        let name = service(index);
        let prefix = format!("Services[{name}]");
        let entries = [
            // Plain values.
            ("Name", format!("Service{index:03}")),
            ("Port", format!("{}", 8000 + index)),
            ("Replicas", format!("{}", 1 + index % 4)),
            ("Enabled", (index % 5 != 0).to_string()),
            ("Owner", format!("team-{}", index % 7)),
            // References, with filters and nesting.
            ("Host", format!("{name}.#{{Domain}}")),
            (
                "Url",
                format!("https://#{{{prefix}.Host}}:#{{{prefix}.Port}}/api/v#{{ApiVersion}}"),
            ),
            ("Slug", format!("#{{{prefix}.Name | ToLower}}")),
            (
                "ConnectionString",
                format!(
                    "Server=#{{Db.Host}},#{{Db.Port}};Database=#{{{prefix}.Slug}};\
                     User Id=#{{Db.User}};Password=#{{Db.Password}}"
                ),
            ),
            ("HealthUrl", format!("#{{{prefix}.Url}}/health")),
        ];
        for (property, value) in entries {
            pairs.push((format!("{prefix}.{property}"), value));
        }
    }
    assert_eq!(pairs.len(), VARIABLES);
    pairs
}

fn dictionary(pairs: &[(String, String)]) -> VariableDictionary {
    pairs.iter().cloned().collect()
}

/// Every variable's value, evaluated, as a deployment resolves its whole set.
fn resolve_all(variables: &VariableDictionary, names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            variables
                .get(name)
                .expect("the variable set has no recursive definitions")
                .expect("every name is set")
        })
        .collect()
}

/// A config-like file of about 100 KB: XML, JSON and ini sections referencing the services,
/// with filters, an `#{if}` and an `#{each}` block, padded with the plain text real files are
/// mostly made of.
fn config_file() -> String {
    let mut file = String::with_capacity(FILE_BYTES + 4096);
    file.push_str(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- #{Banner} deployed to \
         #{Octopus.Environment.Name} by #{Octopus.Deployment.Id} -->\n<configuration>\n",
    );
    file.push_str(
        "#{if Octopus.Environment.Name == \"Production\"}  <system.web><customErrors \
         mode=\"On\" /></system.web>\n#{else}  <system.web><customErrors mode=\"Off\" \
         /></system.web>\n#{/if}",
    );
    file.push_str(
        "  <services>\n#{each s in Services}    <service name=\"#{s.Name}\" url=\"#{s.Url}\" \
         replicas=\"#{s.Replicas}\" />\n#{/each}  </services>\n",
    );
    let mut round = 0;
    while file.len() < FILE_BYTES {
        let name = service(round % SERVICES);
        let prefix = format!("Services[{name}]");
        file.push_str(&format!(
            "  <appSettings section=\"{round}\">\n\
             \x20   <add key=\"{name}:Url\" value=\"#{{{prefix}.Url}}\" />\n\
             \x20   <add key=\"{name}:Db\" value=\"#{{{prefix}.ConnectionString | XmlEscape}}\" />\n\
             \x20   <add key=\"{name}:Enabled\" value=\"#{{{prefix}.Enabled}}\" />\n\
             \x20   <add key=\"Logging:LogLevel:Default\" value=\"#{{LogLevel}}\" />\n\
             \x20   <!-- Settings below are shared by every instance and rarely change. -->\n\
             \x20   <add key=\"Http:MaxRequestBodySize\" value=\"30000000\" />\n\
             \x20   <add key=\"Http:KeepAliveTimeout\" value=\"00:02:00\" />\n\
             \x20 </appSettings>\n\
             \x20 <json><![CDATA[{{\n\
             \x20   \"service\": \"#{{{prefix}.Slug}}\",\n\
             \x20   \"connectionString\": \"#{{{prefix}.ConnectionString | JsonEscape}}\",\n\
             \x20   \"health\": \"#{{{prefix}.HealthUrl}}\",\n\
             \x20   \"cdn\": \"#{{Cdn.Url}}\",\n\
             \x20   \"retry\": {{ \"count\": 3, \"backoffMs\": 250, \"jitter\": true }},\n\
             \x20   \"timeoutSeconds\": #{{Timeout}}\n\
             \x20 }}]]></json>\n\
             \x20 <ini><![CDATA[\n\
             [{name}]\n\
             host = #{{{prefix}.Host}}\n\
             port = #{{{prefix}.Port}}\n\
             owner = #{{{prefix}.Owner | ToUpper}}\n\
             smtp = #{{Smtp.Host}}:#{{Smtp.Port}}\n\
             ; maintained by #{{Owner.Email}}\n\
             \x20 ]]></ini>\n"
        ));
        round += 1;
    }
    file.push_str("</configuration>\n");
    file
}

fn resolve_variable_set(criterion: &mut Criterion) {
    let pairs = variables();
    let names: Vec<String> = pairs.iter().map(|(name, _)| name.clone()).collect();
    let variables = dictionary(&pairs);

    let resolved = resolve_all(&variables, &names);
    for (name, value) in names.iter().zip(&resolved) {
        assert!(!value.contains("#{"), "{name} resolved to {value:?}");
    }
    let index = names
        .iter()
        .position(|name| name == "Services[svc-042].HealthUrl")
        .expect("the set has service 42");
    assert_eq!(
        resolved[index],
        "https://svc-042.production.westeurope.example.com:8042/api/v3/health"
    );

    let mut group = criterion.benchmark_group("resolve 1,000 variables");
    group.throughput(Throughput::Elements(VARIABLES as u64));
    // The dictionary built once (its variable tree on the first evaluation), then every value
    // evaluated.
    group.bench_function("built dictionary", |bench| {
        bench.iter(|| resolve_all(black_box(&variables), &names));
    });
    // Building the dictionary too, as each deployment does for its own variable set.
    group.bench_function("including building the dictionary", |bench| {
        bench.iter_batched(
            || pairs.clone(),
            |pairs| {
                let variables: VariableDictionary = pairs.into_iter().collect();
                resolve_all(&variables, &names)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn substitute_file(criterion: &mut Criterion) {
    let variables = dictionary(&variables());
    let file = config_file();

    let evaluation = variables
        .evaluate_detailed(&file)
        .expect("the file evaluates strictly");
    assert!(
        evaluation.unresolved.is_empty(),
        "unresolved: {:?}",
        evaluation.unresolved
    );
    let output = variables.evaluate_lenient(&file);
    assert_eq!(output, evaluation.output);
    assert!(!output.contains("#{"), "a reference was left as written");
    for expected in [
        "https://svc-007.production.westeurope.example.com:8007/api/v3/health",
        "Database=service042;User Id=app_contoso;Password=p@ss&quot;word;with=specials",
        "<customErrors mode=\"On\" />",
        "<service name=\"Service097\" url=\"https://svc-097.production",
        "owner = TEAM-3",
    ] {
        assert!(output.contains(expected), "the output lacks {expected:?}");
    }

    let mut group = criterion.benchmark_group("substitute a 100 KB file");
    group.throughput(Throughput::Bytes(file.len() as u64));
    group.bench_function("evaluate_lenient", |bench| {
        bench.iter(|| variables.evaluate_lenient(black_box(&file)));
    });
    group.finish();
}

criterion_group!(benches, resolve_variable_set, substitute_file);
criterion_main!(benches);
