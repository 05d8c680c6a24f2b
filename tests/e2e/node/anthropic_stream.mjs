// A streamed Anthropic Messages answer through llamashim with the official `@anthropic-ai/sdk` package: plain text,
// then a real tool call. Usage: node anthropic_stream.mjs BASE_URL TOOL_REQUEST_JSON — prints one JSON line.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, toolRequest] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey: "sk-ant-test", maxRetries: 0, timeout: 120_000 });

// 1. text: the raw events and the text deltas, then the helper's final message
const stream = client.messages.stream({
  model: "claude-sonnet-4-5", max_tokens: 256, temperature: 0, messages: [{ role: "user", content: "Say hello." }],
});
const events = [];
let deltas = "";
stream.on("streamEvent", (event) => events.push(event.type));
stream.on("text", (delta) => { deltas += delta; });
const final = await stream.finalMessage();

// 2. a real tool call (the recipe of test_anthropic_e2e.py), streamed to its final message
const toolFinal = await client.messages.stream(JSON.parse(toolRequest)).finalMessage();
const use = toolFinal.content.find((block) => block.type === "tool_use") ?? {};

console.log(JSON.stringify({
  stop: final.stop_reason, text: final.content.map((b) => b.text ?? "").join(""), deltas,
  events: [events[0], events.at(-1)], toolStop: toolFinal.stop_reason, tool: { name: use.name, input: use.input },
}));
