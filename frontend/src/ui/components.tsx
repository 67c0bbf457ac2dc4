import type { ReactNode } from "react";

export type Tone = "neutral" | "info" | "good" | "bad" | "warn";

export function Badge({ tone = "neutral", children, testId }: { tone?: Tone; children: ReactNode; testId?: string }) {
  return (
    <span className={`badge badge-${tone}`} data-testid={testId}>
      {children}
    </span>
  );
}

export function Spinner({ label = "Loading", testId }: { label?: string; testId?: string }) {
  return <span className="spinner" role="status" aria-label={label} data-testid={testId} />;
}

export function ErrorBox({ title = "Error", message, testId = "error-box" }: { title?: string; message: string; testId?: string }) {
  return (
    <div className="error-box" role="alert" data-testid={testId}>
      <div className="error-title">{title}</div>
      <div className="error-message">{message}</div>
    </div>
  );
}

export function Panel({
  title,
  actions,
  children,
  className = "",
  testId,
}: {
  title?: ReactNode;
  actions?: ReactNode;
  children: ReactNode;
  className?: string;
  testId?: string;
}) {
  return (
    <section className={`panel ${className}`} data-testid={testId}>
      {(title || actions) && (
        <header className="panel-head">
          {title && <h2>{title}</h2>}
          {actions && <div className="panel-actions">{actions}</div>}
        </header>
      )}
      <div className="panel-body">{children}</div>
    </section>
  );
}

export function Empty({ children, testId }: { children: ReactNode; testId?: string }) {
  return (
    <div className="empty" data-testid={testId}>
      {children}
    </div>
  );
}

export type SelectOption = string | { value: string; label: ReactNode; disabled?: boolean };

/** A labelled select: the forms' pickers of a model, dataset, SAE or method. */
export function SelectField({
  label,
  value,
  onChange,
  options,
  testId,
  title,
}: {
  label: ReactNode;
  value: string;
  onChange: (value: string) => void;
  options: SelectOption[];
  testId?: string;
  title?: string;
}) {
  return (
    <label className="field" title={title}>
      <span className="field-label">{label}</span>
      <select value={value} onChange={(e) => onChange(e.target.value)} data-testid={testId}>
        {options.map((o) => {
          const x = typeof o === "string" ? { value: o, label: o, disabled: false } : o;
          return (
            <option key={x.value} value={x.value} disabled={x.disabled}>
              {x.label}
            </option>
          );
        })}
      </select>
    </label>
  );
}
