import { Link } from "../ui/router";

export function NotFound({ path }: { path: string }) {
  return (
    <div className="page">
      <header className="page-head">
        <h1>Not found</h1>
        <p className="lede">
          There is no page at <span className="mono">{path}</span>. Go to the <Link to="/">Overview</Link>.
        </p>
      </header>
    </div>
  );
}
