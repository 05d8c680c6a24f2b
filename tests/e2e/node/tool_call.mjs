// A streamed tool call through llamashim with the official `openai` JavaScript package (what n8n and many agent
// frameworks use). Usage: node tool_call.mjs BASE_URL  — prints one JSON line with what the SDK assembled.
import OpenAI from "openai";

const baseURL = process.argv[2];
const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0, timeout: 120_000 });

const tool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the weather for a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 20 } }, required: ["city"] },
  },
};
const turn = (city, n) => [
  { role: "user", content: `Weather in ${city}?` },
  { role: "assistant", content: "", tool_calls: [{ id: `call_${n}`, type: "function",
    function: { name: "get_weather", arguments: JSON.stringify({ city }) } }] },
  { role: "tool", tool_call_id: `call_${n}`, content: `Sunny in ${city}.` },
];
const request = {
  model: "any",
  messages: [{ role: "system", content: "You answer every question by calling a tool." },
    ...turn("Rome", 1), ...turn("Berlin", 2), { role: "user", content: "Weather in Paris?" }],
  tools: [tool],
  tool_choice: "required",
  temperature: 0,
  max_tokens: 60,
  logit_bias: [[7639, false]],
  stream: true,
};

// 1. by hand from delta.tool_calls
const calls = {};
let finish = null;
for await (const chunk of await client.chat.completions.create(request)) {
  for (const choice of chunk.choices ?? []) {
    finish = choice.finish_reason ?? finish;
    for (const tc of choice.delta?.tool_calls ?? []) {
      const entry = (calls[tc.index] ??= { id: "", name: "", arguments: "" });
      if (tc.id) entry.id = tc.id;
      if (tc.function?.name) entry.name = tc.function.name;
      if (tc.function?.arguments) entry.arguments += tc.function.arguments;
    }
  }
}
// 2. the SDK's own accumulating helper
const runner = client.chat.completions.stream({ ...request, stream: undefined });
const final = await runner.finalChatCompletion();
console.log(JSON.stringify({ finish, calls, helper: final.choices[0].message.tool_calls,
  helperFinish: final.choices[0].finish_reason }));
