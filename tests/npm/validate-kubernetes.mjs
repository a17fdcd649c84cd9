// Validates Kubernetes objects offline, against the Kubernetes API's schemas (kubernetes-models)
// and KEDA's CRDs (@kubernetes-models/keda): no cluster needed. tests/deploy/test_kubernetes.py
// runs it on deploy/kubernetes/.
//   node validate-kubernetes.mjs FILE.yaml...   -> prints {"valid": [...]} or exits 1 with why
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group.endsWith("keda.sh")) return `@kubernetes-models/keda/${group}/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

const valid = [];
const errors = [];
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS();
    if (object === null) continue;
    const where = `${file}: ${object.kind} ${object.metadata?.name}`;
    try {
      const Model = (await import(modulePath(object.apiVersion, object.kind)))[object.kind];
      new Model(object).validate();
      valid.push({ file, apiVersion: object.apiVersion, kind: object.kind, name: object.metadata.name });
    } catch (error) {
      errors.push(`${where}: ${error.message}`);
    }
  }
}
if (errors.length) {
  console.error(errors.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify({ valid }));
