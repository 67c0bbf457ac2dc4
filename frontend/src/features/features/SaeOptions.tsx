import type { SAEList } from "./api";

/** One <option> per SAE: its id and hook. */
export function SaeOptions({ saes }: { saes: SAEList["saes"] }) {
  return (
    <>
      {saes.map((s) => (
        <option key={s.id} value={s.id}>
          {s.id} ({s.hook_name})
        </option>
      ))}
    </>
  );
}
