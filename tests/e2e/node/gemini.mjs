// The Gemini API through llamashim with the official `@google/genai` package (what Gemini CLI is built on): a
// generated and a streamed answer, JSON mode with a schema, a forced function call and its functionResponse turn, countTokens, the model list
// and an error as the SDK's own ApiError, on the SDK's default API version (v1). Usage: node gemini.mjs BASE_URL —
// prints one JSON line.
import { GoogleGenAI, Type } from "@google/genai";

const baseUrl = process.argv[2];
const ai = new GoogleGenAI({ apiKey: "AIza-local", httpOptions: { baseUrl, timeout: 120_000 } });
const model = "gemini-2.5-flash";
const say = { temperature: 0, maxOutputTokens: 24 };

const generated = await ai.models.generateContent({ model, contents: "Say hello.", config: say });

let streamed = "";
let chunks = 0;
let last;
for await (const chunk of await ai.models.generateContentStream({ model, contents: "Say hello.", config: say })) {
  streamed += chunk.text ?? "";
  chunks += 1;
  last = chunk;
}

const weather = {
  name: "get_weather", description: "Get the weather for a city",
  parameters: { type: Type.OBJECT, properties: { city: { type: Type.STRING, maxLength: 20 } }, required: ["city"] },
};
const turn = (city, id) => [
  { role: "user", parts: [{ text: `Weather in ${city}?` }] },
  { role: "model", parts: [{ functionCall: { id, name: "get_weather", args: { city } } }] },
  { role: "user", parts: [{ functionResponse: { id, name: "get_weather", response: { output: `Sunny in ${city}.` } } }] },
];
const tools = [{ functionDeclarations: [weather] }];
const called = await ai.models.generateContent({
  model,
  // the few-shot turns and an assistant prefill the tiny test model needs (as in test_anthropic_e2e.py)
  contents: [...turn("Rome", "call_1"), ...turn("Berlin", "call_2"), { role: "user", parts: [{ text: "Weather in Paris?" }] },
             { role: "model", parts: [{ text: "<tool_call>\n" }] }],
  config: { systemInstruction: "You answer every question by calling a tool.", tools, temperature: 0,
            topK: 1, maxOutputTokens: 60, toolConfig: { functionCallingConfig: { mode: "ANY" } } },
});
const call = called.functionCalls?.[0] ?? {};
const answered = call.name === undefined ? { text: undefined } : await ai.models.generateContent({
  model,
  contents: [{ role: "user", parts: [{ text: "Weather in Paris?" }] }, called.candidates[0].content,
             { role: "user", parts: [{ functionResponse: { id: call.id, name: call.name, response: { output: "Sunny." } } }] }],
  config: { tools, ...say },
});

// JSON mode: responseMimeType with a responseSchema (a grammar in llama-server): the text parses as that object
const json = await ai.models.generateContent({
  model, contents: "Name a colour as JSON.",
  config: { temperature: 0, maxOutputTokens: 40, responseMimeType: "application/json",
            responseSchema: { type: Type.OBJECT, properties: { colour: { type: Type.STRING, maxLength: 12 } },
                              required: ["colour"] } },
});
let parsed = null;
try { parsed = JSON.parse(json.text); } catch { parsed = { unparsed: json.text }; }

const counted = await ai.models.countTokens({ model, contents: "How many tokens is this?" });
const models = [];
// GET /v1/models is OpenAI's list in llamashim: the Gemini list is under v1beta
const beta = new GoogleGenAI({ apiKey: "AIza-local", apiVersion: "v1beta", httpOptions: { baseUrl } });
for await (const m of await beta.models.list()) models.push(m.name);

let error = null;
try {
  await ai.models.generateContent({ model, contents: "Hi", config: { candidateCount: 2 } });
} catch (e) {
  error = { name: e.constructor.name, status: e.status, message: e.message };
}

console.log(JSON.stringify({
  text: generated.text, finish: generated.candidates?.[0]?.finishReason, usage: generated.usageMetadata,
  streamed, chunks, lastFinish: last?.candidates?.[0]?.finishReason,
  call: { id: call.id, name: call.name, args: call.args }, callFinish: called.candidates?.[0]?.finishReason,
  callParts: called.candidates?.[0]?.content?.parts,
  answered: answered.text, json: parsed, tokens: counted.totalTokens, models, error,
}));
