// Asks for the server's API token (LOUPE_TOKEN) when a request is answered 401; the token is kept
// in sessionStorage for this tab (api/client.ts) and every request, streams included, sends it.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { setTokenAsker } from "../../api/client";

interface Ask {
  rejected: boolean;
  resolve: (token: string) => void;
}

export function TokenDialog() {
  const [ask, setAsk] = useState<Ask | null>(null);
  const [value, setValue] = useState("");
  const input = useRef<HTMLInputElement>(null);

  useEffect(() => {
    setTokenAsker((rejected) => new Promise<string>((resolve) => setAsk({ rejected, resolve })));
    return () => setTokenAsker(null);
  }, []);
  useEffect(() => {
    if (ask) input.current?.focus();
  }, [ask]);

  if (!ask) return null;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const token = value.trim();
    if (!token) return;
    setAsk(null);
    setValue("");
    ask.resolve(token);
  };
  return (
    <div className="modal-backdrop">
      <form className="modal panel" role="dialog" aria-modal="true" aria-labelledby="token-title" onSubmit={submit} data-testid="token-dialog">
        <h2 id="token-title">This Loupe server needs a token</h2>
        <p className="small">
          Ask whoever runs it, or find it in <code>LOUPE_TOKEN</code> or the workspace&apos;s <code>api-token</code> file. It is kept for this
          tab only.
        </p>
        {ask.rejected && (
          <div className="error-box" role="alert" data-testid="token-rejected">
            The server did not accept that token.
          </div>
        )}
        <label className="field">
          <span className="field-label">token</span>
          <input
            ref={input}
            type="password"
            autoComplete="off"
            value={value}
            onChange={(e) => setValue(e.target.value)}
            data-testid="token-input"
          />
        </label>
        <button className="btn btn-primary" type="submit" disabled={!value.trim()} data-testid="token-submit">
          Continue
        </button>
      </form>
    </div>
  );
}
