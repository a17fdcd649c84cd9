// The openai npm SDK, unmodified, against the service's /v1 face: generate, edit, list models,
// and one refusal. Prints what it got as JSON for tests/stack/test_openai_npm.py to check.
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: `${process.argv[2]}/v1`, apiKey: "sk-any", maxRetries: 0 });
const fast = { steps: 2, seed: 5 }; // the extension fields local servers take

const made = await client.images.generate({
  model: "demo-sd15", prompt: "a lighthouse", n: 2, size: "64x64",
  response_format: "b64_json", ...fast,
});
const edited = await client.images.edit({
  model: "demo-sd15", prompt: "at night", size: "64x64",
  image: await toFile(Buffer.from(made.data[0].b64_json, "base64"), "in.png", { type: "image/png" }),
  ...fast,
});
const models = [];
for await (const model of client.models.list()) models.push(model.id);
let refusal = null;
try {
  await client.images.generate({ model: "demo-sd15", prompt: "p", size: "65x64" });
} catch (error) {
  refusal = { status: error.status, param: error.param, code: error.code, name: error.constructor.name };
}
console.log(JSON.stringify({
  generated: made.data.map((d) => Buffer.from(d.b64_json, "base64").length),
  edited: edited.data.map((d) => Buffer.from(d.b64_json, "base64").subarray(1, 4).toString()),
  models,
  refusal,
}));
