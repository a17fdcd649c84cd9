// A whole job's life through the client openapi-typescript generates with its defaults
// (api.d.ts, from openapi/openapi.json) and openapi-fetch: submit with only what the job needs,
// poll the envelope, fetch the picture. tsc --strict must accept it; node then runs it.
import createClient from "openapi-fetch";
import type { paths } from "./api.js";

const client = createClient<paths>({ baseUrl: process.argv[2] });

const { data: queued, error } = await client.POST("/jobs", {
  body: { prompt: "a lighthouse", width: 64, height: 64, stages: [{ model: "demo-sd15", steps: 2 }] },
});
if (error !== undefined || queued === undefined) throw new Error(`refused: ${JSON.stringify(error)}`);
let envelope = queued;
for (let i = 0; i < 120 && envelope.status !== "succeeded" && envelope.status !== "failed"; i++) {
  await new Promise((resolve) => setTimeout(resolve, 250));
  const polled = await client.GET("/jobs/{job_id}", { params: { path: { job_id: queued.id } } });
  if (polled.data === undefined) throw new Error("poll failed");
  envelope = polled.data;
}
const image = await client.GET("/jobs/{job_id}/images/{index}", {
  params: { path: { job_id: queued.id, index: 0 } },
  parseAs: "arrayBuffer",
});
const steps: number = envelope.spec?.stages[0]?.steps ?? 0; // answers: filled in, typed so
// The A1111 face with only what a caller sets (A1111 fills the rest, and so does this service)
const drawn = await client.POST("/sdapi/v1/txt2img", {
  body: { prompt: "a lighthouse", width: 64, height: 64, steps: 2,
          override_settings: { sd_model_checkpoint: "demo-sd15" } },
});
const a1111 = drawn.data?.images?.length ?? 0;
console.log(JSON.stringify({ status: envelope.status, bytes: image.data?.byteLength ?? 0, steps, a1111 }));
