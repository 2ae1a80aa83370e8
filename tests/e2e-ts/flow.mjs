// Drives Cuttle end to end with the official Octopus Deploy TypeScript client, exactly as a user
// of `@octopusdeploy/api-client` would: new space, a ~20 MB package pushed to the built-in feed
// (listed, read, refused as a duplicate) with build information, then environment, project, a
// Bash step run on the server, release, untenanted deployment, wait, logs. Only the client's public API is used, so a
// failure here is a wire incompatibility in the server, not in this script.
//
// Input:  CUTTLE_URL (e.g. http://127.0.0.1:8080) and CUTTLE_API_KEY (API-...).
// Output: progress on stderr; on success one JSON line on stdout with the ids and timings.
// Exit:   0 on success, 1 with a message on stderr otherwise.

import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import {
    BuildInformationRepository,
    Client,
    DeploymentProcessRepository,
    DeploymentRepository,
    EnvironmentRepository,
    LifecycleRepository,
    NewProject,
    PackageRepository,
    PackageRequirement,
    ProjectGroupRepository,
    ProjectRepository,
    ReleaseRepository,
    RunCondition,
    RunConditionForAction,
    ServerTaskWaiter,
    SpaceRepository,
    SpaceServerTaskRepository,
    StartTrigger,
    TaskState,
    resolveSpaceId,
    userGetCurrent,
} from "@octopusdeploy/api-client";

const EXPECTED_OUTPUT = "hello from ts";
const PACKAGE_ID = "Cuttle.E2E.Web";
const PACKAGE_VERSION = "1.0.0-ts.1";
const PACKAGE_PAYLOAD_BYTES = 20 * 1024 * 1024;
const DUPLICATE_MESSAGE = "A package with the same name and version already exists";
const TASK_TIMEOUT_MS = 90_000;
const POLL_INTERVAL_MS = 250;

/** A failed expectation about the server's behaviour, reported without a stack trace. */
class FlowFailure extends Error {}

function log(message) {
    process.stderr.write(`[flow] ${message}\n`);
}

function expect(condition, message) {
    if (!condition) {
        throw new FlowFailure(message);
    }
}

function requiredEnv(name) {
    const value = process.env[name];
    if (!value) {
        throw new FlowFailure(`environment variable ${name} is not set`);
    }
    return value;
}

/** Runs `step`, recording how long it took under `name` in `timings`. */
async function timed(timings, name, step) {
    const started = performance.now();
    try {
        return await step();
    } finally {
        timings[name] = Math.round(performance.now() - started);
    }
}

async function main() {
    const instanceURL = requiredEnv("CUTTLE_URL");
    const apiKey = requiredEnv("CUTTLE_API_KEY");
    const timings = {};
    const ids = {};
    const started = performance.now();

    const client = await timed(timings, "connect_ms", () =>
        Client.create({
            instanceURL,
            apiKey,
            userAgentApp: "cuttle-e2e-ts",
            // The client's default logger writes to stdout; keep stdout for the result line.
            logging: {
                debug: () => {},
                info: (message) => log(`client: ${message}`),
                warn: (message) => log(`client warning: ${message}`),
                error: (message, error) => log(`client error: ${message} ${error ?? ""}`),
            },
        }),
    );
    // Every exchange goes to stderr, so a failing run shows which request the server got wrong.
    client.subscribeToResponses("flow", (r) => log(`${r.method} ${r.url} -> ${r.statusCode}`));
    client.subscribeToErrors("flow", (r) => log(`${r.method} ${r.url} -> ${r.statusCode}: ${r.errorMessage} ${(r.errors ?? []).join("; ")}`));
    const user = await userGetCurrent(client);
    ids.user = user.Id;

    // Space names are unique per run so concurrent runs against one server do not collide.
    const spaceName = `ts-${randomUUID().substring(0, 17)}`;
    const spaces = new SpaceRepository(client);
    let space = await timed(timings, "create_space_ms", () =>
        spaces.create({ Name: spaceName, SpaceManagersTeams: [], SpaceManagersTeamMembers: [user.Id], IsDefault: false }),
    );
    ids.space = space.Id;
    log(`created space ${space.Id} "${spaceName}"`);

    let flowError;
    try {
        await runInSpace(client, space, timings, ids);
    } catch (error) {
        flowError = error;
    }

    // Clean up the way the client's own tests do: stop the space's task queue, then delete it.
    // A failure here is reported too, but never hides the flow's own failure.
    try {
        await timed(timings, "delete_space_ms", async () => {
            space = await spaces.get(space.Id);
            space.TaskQueueStopped = true;
            const stopped = await spaces.modify(space);
            expect(stopped.TaskQueueStopped === true, `PUT /api/spaces/${space.Id} did not stop the task queue`);
            await spaces.del(stopped);
        });
        const left = await spaces.list({ partialName: spaceName });
        expect(!left.Items.some((s) => s.Id === space.Id), `space ${space.Id} is still listed after DELETE`);
        log(`deleted space ${space.Id}`);
    } catch (error) {
        if (!flowError) {
            flowError = error;
        } else {
            log(`cleanup also failed: ${describe(error)}`);
        }
    }
    if (flowError) {
        throw flowError;
    }

    timings.total_ms = Math.round(performance.now() - started);
    process.stdout.write(`${JSON.stringify({ ok: true, ids, timings })}\n`);
}

/** Everything between creating and deleting the space. */
async function runInSpace(client, space, timings, ids) {
    const spaceName = space.Name;

    // The client resolves space names through `GET /api/spaces?partialName=` and an exact match.
    const resolvedId = await resolveSpaceId(client, spaceName);
    expect(resolvedId === space.Id, `space "${spaceName}" resolved to ${resolvedId}, expected ${space.Id}`);

    await pushPackage(client, spaceName, timings, ids);

    const environment = await timed(timings, "create_environment_ms", () =>
        new EnvironmentRepository(client, spaceName).create({ Name: `Test ${randomUUID().substring(0, 8)}` }),
    );
    ids.environment = environment.Id;

    // A new space must list its default project group and lifecycle first.
    const projectGroup = (await new ProjectGroupRepository(client, spaceName).list({ take: 1 })).Items[0];
    expect(projectGroup, `space ${space.Id} has no project group`);
    const lifecycle = (await new LifecycleRepository(client, spaceName).list({ take: 1 })).Items[0];
    expect(lifecycle, `space ${space.Id} has no lifecycle`);
    ids.projectGroup = projectGroup.Id;
    ids.lifecycle = lifecycle.Id;

    const project = await timed(timings, "create_project_ms", () =>
        new ProjectRepository(client, spaceName).create(NewProject(`Project ${randomUUID().substring(0, 8)}`, projectGroup, lifecycle)),
    );
    ids.project = project.Id;

    const processes = new DeploymentProcessRepository(client, spaceName);
    const updatedProcess = await timed(timings, "update_process_ms", async () => {
        const deploymentProcess = await processes.get(project);
        deploymentProcess.Steps = [bashStep(`echo "${EXPECTED_OUTPUT}"`)];
        return processes.update(project, deploymentProcess);
    });
    ids.deploymentProcess = updatedProcess.Id;
    expect(updatedProcess.Steps.length === 1, `the updated process has ${updatedProcess.Steps.length} steps, expected 1`);

    // No ReleaseVersion: the server picks one from the project's versioning strategy.
    const release = await timed(timings, "create_release_ms", () =>
        new ReleaseRepository(client, spaceName).create({ spaceName, ProjectName: project.Name }),
    );
    expect(release.ReleaseId && release.ReleaseVersion, `release creation answered ${JSON.stringify(release)}`);
    ids.release = release.ReleaseId;
    ids.releaseVersion = release.ReleaseVersion;

    const deployments = new DeploymentRepository(client, spaceName);
    const deployed = await timed(timings, "deploy_ms", () =>
        deployments.create({
            spaceName,
            ProjectName: project.Name,
            ReleaseVersion: release.ReleaseVersion,
            EnvironmentNames: [environment.Name],
        }),
    );
    expect(deployed.DeploymentServerTasks.length === 1, `deploying to one environment answered ${JSON.stringify(deployed)}`);
    const { DeploymentId: deploymentId, ServerTaskId: taskId } = deployed.DeploymentServerTasks[0];
    ids.deployment = deploymentId;
    ids.task = taskId;
    const listed = await deployments.list({ ids: [deploymentId] });
    expect(listed.Items.length === 1 && listed.Items[0].Id === deploymentId, `listing deployment ${deploymentId} by id returned ${listed.Items.length} items`);

    const task = await timed(timings, "wait_for_task_ms", () =>
        new ServerTaskWaiter(client, spaceName).waitForServerTaskToComplete(taskId, POLL_INTERVAL_MS, TASK_TIMEOUT_MS, (polled) =>
            log(`task ${polled.Id} is ${polled.State}`),
        ),
    );
    expect(task, `task ${taskId} did not complete within ${TASK_TIMEOUT_MS} ms`);

    const tasks = new SpaceServerTaskRepository(client, spaceName);
    const raw = await tasks.getRaw(taskId);
    const details = await tasks.getDetails(taskId);
    expect(
        task.State === TaskState.Success,
        `task ${taskId} ended ${task.State}${task.ErrorMessage ? ` (${task.ErrorMessage})` : ""}, expected Success; raw log:\n${raw}`,
    );
    expect(typeof raw === "string" && raw.includes(EXPECTED_OUTPUT), `the raw log of ${taskId} lacks "${EXPECTED_OUTPUT}":\n${raw}`);
    expect(details.Task?.Id === taskId, `task details name task ${details.Task?.Id}, expected ${taskId}`);
    expect(details.Task.State === TaskState.Success, `task details report ${details.Task.State}, expected Success`);
    expect(Array.isArray(details.ActivityLogs) && details.ActivityLogs.length > 0, `task details of ${taskId} have no activity logs`);
    log(`task ${taskId} succeeded; raw log has ${raw.length} characters`);
}

/**
 * Pushes a generated ~20 MB zip with `PackageRepository.push`, finds it with `?filter=`, reads it,
 * checks that a second push is refused as a duplicate, then pushes build information for it and
 * reads it back on the package as `PackageVersionBuildInformation`.
 */
async function pushPackage(client, spaceName, timings, ids) {
    const directory = await mkdtemp(join(tmpdir(), "cuttle-flow-"));
    try {
        const file = join(directory, `${PACKAGE_ID}.${PACKAGE_VERSION}.zip`);
        const zip = storedZip("site/payload.bin", randomBytes(PACKAGE_PAYLOAD_BYTES));
        await writeFile(file, zip);
        const packages = new PackageRepository(client, spaceName);
        await timed(timings, "push_package_ms", () => packages.push([file]));

        const listed = await packages.list({ filter: PACKAGE_ID.toLowerCase(), take: 10 });
        const expectedId = `packages-${PACKAGE_ID}.${PACKAGE_VERSION}`;
        expect(
            listed.Items.length === 1 && listed.Items[0].Id === expectedId,
            `listing packages with filter=${PACKAGE_ID} returned ${JSON.stringify(listed.Items.map((p) => p.Id))}, expected [${expectedId}]`,
        );
        const stored = await packages.get(expectedId);
        expect(stored.PackageId === PACKAGE_ID && stored.Version === PACKAGE_VERSION, `GET ${expectedId} answered ${stored.PackageId} ${stored.Version}`);
        expect(stored.PackageSizeBytes === zip.length, `the stored package has ${stored.PackageSizeBytes} bytes, expected ${zip.length}`);
        ids.package = stored.Id;

        let duplicate;
        try {
            await packages.push([file]);
        } catch (error) {
            duplicate = error;
        }
        expect(duplicate, "pushing the same package version twice succeeded; expected a conflict");
        expect(
            String(duplicate.message).includes(DUPLICATE_MESSAGE),
            `the duplicate push failed with "${duplicate.message}", expected it to contain "${DUPLICATE_MESSAGE}"`,
        );

        const commit = randomBytes(20).toString("hex");
        await timed(timings, "push_build_information_ms", () =>
            new BuildInformationRepository(client, spaceName).push({
                spaceName,
                BuildEnvironment: "cuttle-e2e",
                BuildNumber: "42",
                BuildUrl: "https://ci.example/builds/42",
                Branch: "main",
                VcsType: "Git",
                VcsRoot: "https://git.example/cuttle.git",
                VcsCommitNumber: commit,
                Packages: [{ Id: PACKAGE_ID, Version: PACKAGE_VERSION }],
                Commits: [{ Id: commit, Comment: "e2e: push a package" }],
            }),
        );
        const withInformation = await packages.get(expectedId);
        expect(
            withInformation.PackageVersionBuildInformation?.VcsCommitNumber === commit,
            `package ${expectedId} shows build information ${JSON.stringify(withInformation.PackageVersionBuildInformation)}, expected commit ${commit}`,
        );
        log(`pushed package ${expectedId} (${zip.length} bytes) with build information`);
    } finally {
        await rm(directory, { recursive: true, force: true });
    }
}

/**
 * A zip archive of one stored (uncompressed) file, written by hand so the flow needs no zip
 * library: a local file header and the data, then the central directory and its end record.
 */
function storedZip(name, data) {
    const nameBytes = Buffer.from(name, "utf8");
    const checksum = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0); // local file header signature
    local.writeUInt16LE(20, 4); // version needed to extract (2.0)
    local.writeUInt16LE(0x0800, 6); // flags: UTF-8 name
    local.writeUInt16LE(0, 8); // method: stored
    local.writeUInt32LE(0, 10); // DOS time and date
    local.writeUInt32LE(checksum, 14);
    local.writeUInt32LE(data.length, 18); // compressed size
    local.writeUInt32LE(data.length, 22); // uncompressed size
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(0, 28); // extra field length
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0); // central directory header signature
    central.writeUInt16LE(0x0314, 4); // made by: Unix, 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt32LE(0, 12);
    central.writeUInt32LE(checksum, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    // Extra and comment lengths, disk number and internal attributes stay zero.
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // external attributes: a regular file
    central.writeUInt32LE(0, 42); // offset of the local header
    const centralOffset = local.length + nameBytes.length + data.length;
    const centralSize = central.length + nameBytes.length;
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0); // end of central directory signature
    end.writeUInt16LE(1, 8); // entries on this disk
    end.writeUInt16LE(1, 10); // entries in total
    end.writeUInt32LE(centralSize, 12);
    end.writeUInt32LE(centralOffset, 16);
    return Buffer.concat([local, nameBytes, data, central, nameBytes, end]);
}

/** One step with one inline Bash script run on the server, shaped like the client's own tests. */
function bashStep(script) {
    return {
        Id: "",
        Name: "Say hello",
        Condition: RunCondition.Success,
        PackageRequirement: PackageRequirement.LetOctopusDecide,
        StartTrigger: StartTrigger.StartAfterPrevious,
        Properties: {},
        Actions: [
            {
                Id: "",
                Name: "Say hello",
                ActionType: "Octopus.Script",
                Notes: null,
                IsDisabled: false,
                CanBeUsedForProjectVersioning: false,
                IsRequired: false,
                WorkerPoolId: null,
                WorkerPoolVariable: "",
                Container: { Image: null, FeedId: null },
                Environments: [],
                ExcludedEnvironments: [],
                Channels: [],
                TenantTags: [],
                Packages: [],
                Condition: RunConditionForAction.Success,
                Properties: {
                    "Octopus.Action.RunOnServer": "true",
                    "Octopus.Action.Script.ScriptSource": "Inline",
                    "Octopus.Action.Script.Syntax": "Bash",
                    "Octopus.Action.Script.ScriptBody": script,
                },
            },
        ],
    };
}

/** A one-paragraph description of an error: the client's OctopusError carries the HTTP status. */
function describe(error) {
    if (error instanceof FlowFailure) {
        return error.message;
    }
    const status = error?.StatusCode ? ` (HTTP ${error.StatusCode})` : "";
    return `${error?.message ?? error}${status}\n${error?.stack ?? ""}`;
}

main().then(
    // Exit explicitly: after `PackageRepository.push` the client's HTTP agent keeps the upload
    // connections referenced (the server leaves them reusable, as curl shows), so node would
    // otherwise wait on them forever.
    () => process.exit(0),
    (error) => {
        process.stderr.write(`[flow] FAILED: ${describe(error)}\n`);
        process.exit(1);
    },
);
