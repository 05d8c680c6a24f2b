// A streamed Responses answer through llamashim with the official `openai` JavaScript package: plain text, then a
// real tool call. Usage: node responses_stream.mjs BASE_URL TOOL_REQUEST_JSON — prints one JSON line.
import OpenAI from "openai";

const [baseURL, toolRequest] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0, timeout: 120_000 });

// 1. text: collect the deltas and the event types, then the helper's final response
const stream = client.responses.stream({ model: "any", input: "Say hello.", max_output_tokens: 256, temperature: 0 });
const events = [];
let deltas = "";
for await (const event of stream) {
  events.push(event.type);
  if (event.type === "response.output_text.delta") deltas += event.delta;
}
const final = await stream.finalResponse();

// 2. a real tool call (the recipe of test_responses_e2e.py), streamed to its final response
const toolFinal = await client.responses.stream(JSON.parse(toolRequest)).finalResponse();
const call = toolFinal.output.find((item) => item.type === "function_call") ?? {};

console.log(JSON.stringify({
  status: final.status, text: final.output_text, deltas, events: [events[0], events.at(-1)],
  tool: { status: toolFinal.status, name: call.name, arguments: call.arguments, callId: call.call_id },
}));
