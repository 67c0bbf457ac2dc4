/** The demo world's chat format (DESIGN.md): the prompt a chat model completes after "Assistant:". */
export const chatPrompt = (instruction: string) => `User: ${instruction}\nAssistant:`;
